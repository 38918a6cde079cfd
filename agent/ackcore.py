"""Acknowledge-until-acked, the pure part: which messages need an acknowledgement and what a
due re-alert does. No I/O and no clock reads (the caller passes ``now``).

Theory of operation
-------------------
A message needs an acknowledgement when its publisher said so (``"ack": "required"``, from
``X-Ack: required``; agent.ntfyproto.ack) or when it has priority 5 and a ``[[rules]]``
entry matching its topic sets ``ack_urgent = true``; ``stamp`` writes the latter into the
message before it is stored, so the store, the notifier's "Acknowledge" button and the
re-alert schedule see one field. The store keeps the schedule (migration 013: a row per
such message, removed by a trigger when it turns ``acknowledged``); ``agent.realert`` sleeps
until the first due row and asks ``decide`` what to do with it:

1. the message is gone, ``acknowledged`` or deleted (ntfy's delete): STOP (never
   re-alerted, whatever else holds);
2. its expiry has passed: STOP;
3. priority below 5 and paused (``pushagent pause``) or in quiet hours: HOLD (no alert now,
   looked at again one retry later);
4. else ALERT: a new notification, urgency critical with sound, and the next one a retry
   interval from now (an agent that was down for ten intervals alerts once, not ten times).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from agent.envelope import Message
from agent.ntfyproto.ack import DEFAULT_EXPIRE, DEFAULT_RETRY, REQUIRED
from agent.topics import glob_match

STOP = "stop"
HOLD = "hold"
ALERT = "alert"


class UrgentRule(Protocol):
    """What ``stamp`` reads of a ``[[rules]]`` entry (agent.config.Rule)."""

    @property
    def topic(self) -> str: ...

    @property
    def ack_urgent(self) -> bool: ...


def required(msg: Message) -> bool:
    """Does this message ask to be acknowledged?"""
    return bool(msg.extra) and msg.extra.get("ack") == REQUIRED


def stamp(msg: Message, rules: Sequence[UrgentRule]) -> Message:
    """``msg`` marked ack-required if it is priority 5 on a topic an ``ack_urgent`` rule
    matches (with the default retry/expire unless the publisher gave them)."""
    if msg.priority < 5 or required(msg):
        return msg
    if not any(r.ack_urgent and glob_match(r.topic, msg.topic) for r in rules):
        return msg
    extra = {"ack_retry": DEFAULT_RETRY, "ack_expire": DEFAULT_EXPIRE, **msg.extra}
    extra["ack"] = REQUIRED
    return replace(msg, extra=extra)


def decide(*, state: str | None, expires: float, priority: int, now: float, held: bool) -> str:
    """STOP, HOLD or ALERT for a due re-alert (see the module docstring). ``state`` is the
    message's stored state (None: no longer stored); ``held``: paused or in quiet hours."""
    if state is None or state in ("acknowledged", "deleted"):
        return STOP
    if now >= expires:
        return STOP
    if held and priority < 5:
        return HOLD
    return ALERT


def next_due(now: float, retry: float) -> float:
    """When the next re-alert is due after one handled at ``now``."""
    return now + max(retry, 1.0)


def realert_message(msg: Message, count: int) -> Message:
    """What a re-alert shows: the message at urgency critical with sound (priority 5 on every
    backend), marked ``realert`` so a backend shows it as a new notification."""
    return replace(msg, priority=5, extra={**msg.extra, "realert": count})
