"""Message states, their one order, and the synced-state event (pure: no I/O).

Theory of operation
-------------------
A message's state only moves forward. The order is one table, ``RANK``, used by the agent's
store, the relay's store and both ends of state sync::

    received = delivered < displayed < dismissed < clicked < read < acknowledged

``dismissed`` and ``clicked`` are both "handled"; clicked ranks above dismissed so that two
devices reporting different states for the same message (one clicked, one dismissed, in the
same second) end in the SAME state everywhere whatever order the reports arrive in: with equal
ranks the first to arrive would win, and two devices would disagree for ever. ``read`` is
``pushagent read`` (and ntfy's clear), ``acknowledged`` the explicit acknowledgement.

A late or duplicate state is a no-op: applying ``new`` to ``old`` changes something only when
``rank(new) > rank(old)``. Ordering is by rank, never by the devices' clocks, so clock skew
between devices cannot reorder anything; the event's ``time`` is only reported.

Synced states (``SYNCED``): the ones that mean "the user has dealt with it", which close the
notification on the user's other devices. ``delivered`` and ``displayed`` stay receipts: a
message shown on the laptop is still unseen on the phone.

Store-only marks rank above every state a device reports: ``deleted`` (ntfy's delete of a
sequence) and ``undecryptable`` (kept until a key decrypts it; agent.store.sealed).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.errors import MessageError

STATES = ("received", "delivered", "displayed", "clicked", "dismissed", "read", "acknowledged")
"""Every state a device may report (receipts, ``record_states``)."""
RANK: dict[str, int] = {
    "received": 0,
    "delivered": 0,
    "displayed": 1,
    "dismissed": 2,
    "clicked": 3,
    "read": 4,
    "acknowledged": 5,
}
MARKS: dict[str, int] = {"deleted": 6, "undecryptable": 9}
"""Store-only states: above anything a device reports, so no receipt undoes them."""
SYNCED = frozenset({"dismissed", "clicked", "read", "acknowledged"})
"""States that go to the user's other devices and close the notification there."""
STATE_EVENT = "message_state"
"""The relay's stream event carrying a synced state (ntfy clients ignore unknown events)."""
MAX_DEVICE = 128


def rank(state: str) -> int:
    """The state's place in the order; ValueError for a name that is not a state."""
    r = RANK.get(state)
    if r is None:
        r = MARKS.get(state)
    if r is None:
        raise ValueError(f"unknown state {state!r}; expected one of {', '.join(STATES)}")
    return r


def advances(old: str, new: str) -> bool:
    """True when ``new`` moves a message in state ``old`` forward (else it is a no-op)."""
    return rank(new) > rank(old)


def rank_sql(column: str = "state", *, skip: Iterable[str] = ()) -> str:
    """A SQL CASE expression giving ``column``'s rank (the same table, for UPDATE ... WHERE);
    states in ``skip`` rank 0 there."""
    table = {s: r for s, r in {**RANK, **MARKS}.items() if r and s not in skip}
    whens = " ".join(f"WHEN '{s}' THEN {r}" for s, r in table.items())
    return f"(CASE {column} {whens} ELSE 0 END)"


@dataclass(frozen=True, slots=True)
class StateEvent:
    """One device's state for one message, as it travels between devices."""

    id: str
    state: str
    device: str = ""
    time: float = 0.0
    topic: str = ""
    device_name: str = ""

    def wire(self) -> dict[str, Any]:
        """The JSON object sent on a relay stream and an MQTT state topic."""
        out: dict[str, Any] = {"event": STATE_EVENT, "id": self.id, "state": self.state,
                               "device": self.device, "time": int(self.time)}  # fmt: skip
        if self.topic:
            out["topic"] = self.topic
        if self.device_name:
            out["device_name"] = self.device_name
        return out


def parse_event(obj: Any, *, topic: str = "") -> StateEvent:
    """A state event from its JSON object; MessageError naming the field for anything else.

    ``topic`` is where it came from when the object does not say (an MQTT state topic)."""
    from agent.envelope import check_id

    if not isinstance(obj, Mapping):
        raise MessageError("a state event must be a JSON object", field="state")
    mid = check_id(obj.get("id"))
    state = obj.get("state")
    if not isinstance(state, str) or state not in RANK:
        raise MessageError(f"state must be one of {', '.join(STATES)}", field="state")
    device = _text(obj.get("device", ""), "device")
    name = _text(obj.get("device_name", ""), "device_name")
    where = obj.get("topic", topic)
    if not isinstance(where, str) or len(where) > 256:
        raise MessageError("topic must be a topic name", field="topic")
    at = obj.get("time", 0)
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        raise MessageError("time must be a unix time", field="time")
    return StateEvent(mid, str(state), device, max(0.0, float(at)), where, name)


def from_payload(topic: str, payload: bytes) -> StateEvent:
    """A synced state from an MQTT state topic (``<state_topic_prefix>/<topic>``): ``topic``
    is the MQTT topic's, never what the payload claims. MessageError for anything else."""
    obj: Any = None
    if len(payload) <= 4096:
        try:
            obj = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            obj = None
    if isinstance(obj, dict):
        obj["topic"] = topic
    return parse_event(obj, topic=topic)


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_DEVICE or not value.isprintable():
        raise MessageError(f"{field} must be a short printable string", field=field)
    return value


def winners(events: Iterable[StateEvent]) -> dict[str, StateEvent]:
    """The highest-ranked event per message id. Among equal ranks the first seen stays: a
    duplicate changes nothing, whichever device's clock says it came first."""
    best: dict[str, StateEvent] = {}
    for ev in events:
        old = best.get(ev.id)
        if old is None or RANK[ev.state] > RANK[old.state]:
            best[ev.id] = ev
    return best
