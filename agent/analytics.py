"""Delivery analytics as pure functions: the store's grouped counts in, reports out.

Two reports, both built from ``agent.store.analytics`` aggregates (no sockets, no SQLite):

* **The funnel** (the relay's ``/v1/stats?since=`` and ``edge-relay stats``): per topic and
  per UTC day, messages published, and the devices that reported each state for them
  (delivered, displayed, clicked, dismissed, acknowledged), the click-through rate
  ``clicked / displayed`` (None while nothing was displayed) and the median seconds from
  publish to click. A receipt counts on its message's publish day.
* **Engagement** (``pushagent stats``): per topic and per tag, what this agent did with its
  messages: shown, clicked, dismissed unread (its final state is ``dismissed``: closed, never
  clicked nor read later), muted by a rule (``mute`` or ``min_priority``), and a suggested
  ``[[rules]]`` entry for a topic (or a ``prefix/*`` of several) whose shown messages are
  nearly all dismissed unread.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.states import rank
from agent.store.analytics import FunnelRows
from agent.timeparse import parse_duration

FUNNEL_STATES = ("delivered", "displayed", "clicked", "dismissed", "acknowledged")
MUTING = frozenset({"muted", "low-priority"})
"""Rule verdicts (agent.rules) that count as "muted by rule"; quiet hours, pause and bursts
hold a message back for a while, they do not say the user does not want the topic."""
SUGGEST_THRESHOLD = 0.9
SUGGEST_MIN_SAMPLE = 20


def window_start(text: str, *, now: int) -> int:
    """The unix time a stats window ``since=`` starts at: a duration back from ``now``
    (``7d``, ``12h``), a unix time (9+ digits), or ``all`` (0). ValueError otherwise."""
    value = text.strip().lower()
    if value == "all":
        return 0
    if value.isdigit() and len(value) >= 9:
        return int(value)
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise ValueError(
            f"since={text[:40]!r} is not a duration (7d, 12h), a unix time or 'all'"
        ) from None
    return max(0, now - seconds)


def day_label(day: int) -> str:
    """The ISO date of a UTC day number (``time // 86400``)."""
    return dt.datetime.fromtimestamp(day * 86400, dt.UTC).date().isoformat()


def funnel(published: int, states: Mapping[str, int], median: float | None) -> dict[str, Any]:
    """One row of the funnel: counts, click-through rate and median time to click."""
    row: dict[str, Any] = {"published": published}
    row.update({s: int(states.get(s, 0)) for s in FUNNEL_STATES})
    shown = row["displayed"]
    row["ctr"] = round(row["clicked"] / shown, 4) if shown else None
    row["median_click_seconds"] = None if median is None else round(median, 3)
    return row


def funnel_report(
    rows: FunnelRows, *, readable: Callable[[str], bool], since: int, until: int
) -> dict[str, Any]:
    """``{"since", "until", "topics": {topic: {"total": row, "days": [row + "day"]}}}`` for
    the topics ``readable`` allows, days oldest first."""
    published: dict[str, dict[int, int]] = defaultdict(dict)
    states: dict[str, dict[int, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    medians: dict[tuple[str, int | None], float] = {}
    for topic, day, n in rows.published:
        published[topic][day] = n
    for topic, day, state, n in rows.states:
        states[topic][day][state] = n
    for topic, mday, median in rows.medians:
        medians[(topic, mday)] = median
    topics: dict[str, Any] = {}
    for topic in sorted(set(published) | set(states)):
        if not readable(topic):
            continue
        days = sorted(set(published[topic]) | set(states[topic]))
        total: dict[str, int] = defaultdict(int)
        for d in days:
            for state, n in states[topic][d].items():
                total[state] += n
        topics[topic] = {
            "total": funnel(sum(published[topic].values()), total, medians.get((topic, None))),
            "days": [
                {"day": day_label(d), **funnel(published[topic].get(d, 0), states[topic][d],
                                               medians.get((topic, d)))}
                for d in days
            ],
        }  # fmt: skip
    return {"since": since, "until": until, "topics": topics}


def by_device(
    rows: Iterable[tuple[str, str, str, float]], names: Mapping[tuple[str, str], str]
) -> list[dict[str, Any]]:
    """A message's receipts ``(owner, device, state, time)`` grouped per device: its name
    (``names``, the relay's ``devices`` table; "" when it gave none), each state it reported
    with its time, and the furthest state it reached."""
    devices: dict[tuple[str, str], dict[str, Any]] = {}
    for owner, device, state, at in rows:
        entry = devices.setdefault(
            (owner, device),
            {"owner": owner, "device": device, "device_name": names.get((owner, device), ""),
             "state": state, "states": {}},
        )  # fmt: skip
        entry["states"].setdefault(state, at)
        if rank(state) >= rank(entry["state"]):
            entry["state"] = state
    return list(devices.values())


# --- the agent's own engagement ----------------------------------------------------------------


@dataclass
class Engagement:
    """What became of one topic's (or tag's) messages on this agent."""

    received: int = 0
    shown: int = 0
    clicked: int = 0
    dismissed_unread: int = 0
    muted: int = 0
    held: int = 0
    """Held back for another reason (quiet hours, pause, burst folding)."""
    dismissed_by_priority: dict[int, int] = field(default_factory=dict)

    def add(self, priority: int, state: str, shown: bool, clicked: bool, verdict: str | None,
            n: int) -> None:  # fmt: skip
        self.received += n
        self.shown += n if shown else 0
        self.clicked += n if clicked else 0
        if verdict in MUTING:
            self.muted += n
        elif verdict is not None:
            self.held += n
        if state == "dismissed" and shown:
            self.dismissed_unread += n
            self.dismissed_by_priority[priority] = self.dismissed_by_priority.get(priority, 0) + n

    def merge(self, other: Engagement) -> None:
        for name in ("received", "shown", "clicked", "dismissed_unread", "muted", "held"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for p, n in other.dismissed_by_priority.items():
            self.dismissed_by_priority[p] = self.dismissed_by_priority.get(p, 0) + n

    def as_dict(self) -> dict[str, Any]:
        rate = round(self.dismissed_unread / self.shown, 4) if self.shown else None
        return {"received": self.received, "shown": self.shown, "clicked": self.clicked,
                "dismissed_unread": self.dismissed_unread, "muted": self.muted,
                "held": self.held, "dismissed_rate": rate}  # fmt: skip


def engagement_report(
    rows: Iterable[tuple[str, int, str | None, str, bool, bool, str | None, int]],
    *,
    since: int,
    threshold: float = SUGGEST_THRESHOLD,
    min_sample: int = SUGGEST_MIN_SAMPLE,
) -> dict[str, Any]:
    """``{"since", "topics": {...}, "tags": {...}, "suggestions": [...]}`` from
    ``Store.engagement_rows``."""
    topics: dict[str, Engagement] = defaultdict(Engagement)
    tags: dict[str, Engagement] = defaultdict(Engagement)
    for topic, priority, tag_json, state, shown, clicked, verdict, n in rows:
        topics[topic].add(priority, state, shown, clicked, verdict, n)
        for tag in _tags(tag_json):
            tags[tag].add(priority, state, shown, clicked, verdict, n)
    return {
        "since": since,
        "topics": {t: e.as_dict() for t, e in sorted(topics.items())},
        "tags": {t: e.as_dict() for t, e in sorted(tags.items())},
        "suggestions": suggest(topics, threshold=threshold, min_sample=min_sample),
    }


def _tags(tag_json: str | None) -> list[str]:
    if not tag_json:
        return []
    try:
        value = json.loads(tag_json)
    except ValueError:
        return []
    return sorted({str(t) for t in value}) if isinstance(value, list) else []


def suggest(
    topics: Mapping[str, Engagement], *, threshold: float, min_sample: int
) -> list[dict[str, Any]]:
    """A ``[[rules]]`` entry for each topic group the user nearly always dismisses unread.

    Groups: ``prefix/*`` when two or more topics share the part before their first ``/``
    (it then stands for them), else each topic. A group qualifies with at least
    ``min_sample`` shown messages of which ``threshold`` or more were dismissed unread. The
    rule: ``min_priority`` one above the highest priority dismissed, or ``mute = true`` when
    even priority 5 was dismissed.
    """
    groups: dict[str, list[str]] = defaultdict(list)
    for topic in topics:
        if "/" in topic:
            groups[topic.split("/", 1)[0] + "/*"].append(topic)
    chosen = {p: members for p, members in groups.items() if len(members) >= 2}
    covered = {t for members in chosen.values() for t in members}
    chosen.update({t: [t] for t in topics if t not in covered})
    out = []
    for pattern, members in sorted(chosen.items()):
        total = Engagement()
        for t in members:
            total.merge(topics[t])
        if total.shown < min_sample or total.dismissed_unread < threshold * total.shown:
            continue
        top = max(total.dismissed_by_priority)
        rule: dict[str, Any] = {"topic": pattern}
        rule.update({"min_priority": top + 1} if top < 5 else {"mute": True})
        key = f"min_priority = {top + 1}" if top < 5 else "mute = true"
        percent = round(100 * total.dismissed_unread / total.shown)
        out.append({
            "pattern": pattern, "topics": sorted(members), "shown": total.shown,
            "dismissed_unread": total.dismissed_unread,
            "dismissed_rate": round(total.dismissed_unread / total.shown, 4), "rule": rule,
            "text": f"{pattern}: {percent} % dismissed unread ({total.dismissed_unread} of "
                    f"{total.shown} shown) — `{key}`?",
        })  # fmt: skip
    return out
