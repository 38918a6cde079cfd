"""Delivery rules: which stored messages interrupt the user, and which only go to history.

Pure: no I/O and no clock reads. The caller passes the time in (``now`` for bursts and pause,
``minute`` = local minute of the day for quiet hours), so every rule is a table-driven test.

Theory of operation
-------------------
For each message, in order (the first that applies decides):

1. **pause** (do-not-disturb, ``pushagent pause``): nothing is shown until ``paused_until``.
2. **mute**: a matching ``[[rules]]`` entry with ``mute = true``.
3. **min_priority**: below the highest ``min_priority`` of the matching ``[[rules]]``.
   When several rules match a topic the strictest wins (any mute mutes, the highest floor
   counts), so the order of ``[[rules]]`` in the file does not matter.
4. **quiet hours** (``"22:00-07:00"``, may cross midnight; start inclusive, end exclusive):
   priority 5 still gets through unless ``quiet_hours_strict``.
5. **burst**: beyond ``count`` shown messages from one topic within ``seconds``, the rest
   are folded into one summary ("N new messages in TOPIC"). At most one summary per topic per
   ``seconds``; a count that arrives too early waits in ``pending`` until ``flush``.

Suppressed messages are not lost: they were stored before the rules ran and stay in history.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.topics import glob_match

# The desktop's storm guard when the config sets no ``burst``: 10,000 messages in a second
# must never mean 10,000 notifications on screen.
DEFAULT_BURST = (10, 10.0)

SHOW = "show"
PAUSED = "paused"
MUTED = "muted"
LOW_PRIORITY = "low-priority"
QUIET = "quiet"
BURST = "burst"


@dataclass(frozen=True)
class TopicRule:
    """One ``[[rules]]`` entry (``topic`` is a glob: ``*`` matches any characters)."""

    topic: str
    min_priority: int = 1
    mute: bool = False


@dataclass(frozen=True)
class Policy:
    """The rules from the configuration, in plain values."""

    rules: tuple[TopicRule, ...] = ()
    quiet_hours: tuple[int, int] | None = None  # (start, end) minutes of the day
    quiet_hours_strict: bool = False
    burst_count: int | None = DEFAULT_BURST[0]  # None: no burst folding
    burst_seconds: float = DEFAULT_BURST[1]


@dataclass(frozen=True)
class Item:
    """What the rules need to know about one message."""

    id: str
    topic: str
    priority: int


@dataclass(frozen=True)
class Summary:
    topic: str
    count: int

    @property
    def text(self) -> str:
        return f"{self.count} new message{'s' if self.count != 1 else ''} in {self.topic}"


@dataclass(frozen=True)
class Decision:
    """Per message id, ``SHOW`` or the reason it was held back; plus summaries to show."""

    verdicts: tuple[tuple[str, str], ...]
    summaries: tuple[Summary, ...] = ()

    @property
    def shown(self) -> list[str]:
        return [mid for mid, v in self.verdicts if v == SHOW]


def parse_hhmm_range(text: str) -> tuple[int, int]:
    """``"22:00-07:00"`` → ``(1320, 420)`` (minutes of the day). Raises ValueError."""
    try:
        start, end = text.split("-")
        return _minutes(start), _minutes(end)
    except ValueError:
        raise ValueError(f'quiet hours must look like "22:00-07:00", not {text!r}') from None


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.strip().split(":")
    h, m = int(hours), int(minutes)
    if not (0 <= h <= 23 and 0 <= m <= 59):
        raise ValueError(hhmm)
    return h * 60 + m


def in_quiet_hours(window: tuple[int, int], minute: int) -> bool:
    """True when ``minute`` (of the day) is inside ``window``; the window may cross midnight."""
    start, end = window
    if start == end:
        return False  # "22:00-22:00" is an empty window, not the whole day
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end


def topic_rule(rules: Sequence[TopicRule], topic: str) -> tuple[bool, int]:
    """``(muted, min_priority)`` for ``topic``: the strictest of all matching rules."""
    muted, floor = False, 1
    for rule in rules:
        if glob_match(rule.topic, topic):
            muted = muted or rule.mute
            floor = max(floor, rule.min_priority)
    return muted, floor


@dataclass
class Gate:
    """Applies a ``Policy`` to batches, remembering recent shown messages for bursts."""

    policy: Policy
    _recent: dict[str, deque[float]] = field(default_factory=dict)
    _last_summary: dict[str, float] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)

    def decide(
        self,
        items: Sequence[Item],
        *,
        now: float,
        minute: int,
        paused_until: float | None = None,
    ) -> Decision:
        """The verdict for each item (oldest first) and the summaries due now."""
        verdicts = []
        folded: dict[str, int] = {}
        for item in items:
            verdict = self._static(item, now=now, minute=minute, paused_until=paused_until)
            if verdict == SHOW and not self._admit(item.topic, now):
                verdict = BURST
                folded[item.topic] = folded.get(item.topic, 0) + 1
            verdicts.append((item.id, verdict))
        for topic, count in folded.items():
            self.pending[topic] = self.pending.get(topic, 0) + count
        return Decision(tuple(verdicts), self.flush(now=now))

    def flush(self, *, now: float) -> tuple[Summary, ...]:
        """Summaries for topics whose pending count may be shown now (one per ``seconds``)."""
        due = []
        for topic, count in list(self.pending.items()):
            last = self._last_summary.get(topic)
            if last is None or now - last >= self.policy.burst_seconds:
                due.append(Summary(topic, count))
                self._last_summary[topic] = now
                del self.pending[topic]
        return tuple(due)

    def next_flush(self) -> float | None:
        """When the earliest pending summary becomes due, or None if nothing is pending."""
        times = [self._last_summary.get(t, 0.0) + self.policy.burst_seconds for t in self.pending]
        return min(times) if times else None

    def _static(self, item: Item, *, now: float, minute: int, paused_until: float | None) -> str:
        if paused_until is not None and now < paused_until:
            return PAUSED
        muted, floor = topic_rule(self.policy.rules, item.topic)
        if muted:
            return MUTED
        if item.priority < floor:
            return LOW_PRIORITY
        window = self.policy.quiet_hours
        urgent = item.priority >= 5 and not self.policy.quiet_hours_strict
        if window is not None and in_quiet_hours(window, minute) and not urgent:
            return QUIET
        return SHOW

    def _admit(self, topic: str, now: float) -> bool:
        if self.policy.burst_count is None:
            return True
        recent = self._recent.setdefault(topic, deque())
        horizon = now - self.policy.burst_seconds
        while recent and recent[0] <= horizon:
            recent.popleft()
        if len(recent) >= self.policy.burst_count:
            return False
        recent.append(now)
        return True
