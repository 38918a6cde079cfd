"""Receipts and synced read state at the relay: ``POST /v1/receipts`` records each device's
states under the caller's token name (the owner) and sends the synced ones (agent.states) to
the owner's other open streams; ``GET /v1/messages/<id>/receipts`` lists them.

"The user's devices" are the streams opened with the same token (the same owner): a state
one of them reports goes to all of that owner's subscribers of the message's topic as a
``message_state`` event (edge_relay.hub), and a stream resuming with ``since=`` gets the
states it missed (edge_relay.streams). A device hears its own state back and ignores it.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any, NamedTuple

from aiohttp import web

from agent.analytics import by_device
from agent.envelope import check_id, check_unicode
from agent.errors import AuthError, MessageError
from agent.states import STATES, SYNCED, StateEvent
from edge_relay import acks
from edge_relay.state import Forbidden, RelayState


async def receipts_post(request: web.Request) -> web.Response:
    """``POST /v1/receipts``: ``[{id, state, device, device_name, time}, ...]``, recorded
    under the caller; synced states then go to the caller's other streams (``_sync``).

    The owner is the caller's token name, never something the body says; a receipt for a
    message the caller may not read is ignored exactly as one for an unknown id (so the answer
    does not tell them apart), and ``time`` is kept only within the retention window (see
    ``_receipt_time``). A receipt that names a ``topic`` the caller may not read is refused
    (403): a forged state, which says nothing about any message.
    """
    state: RelayState = request.app["state"]
    ident = state.identify(request)
    if not ident.grant.read:  # may read nothing at all: say so (naming no message or topic)
        if ident.name == "anonymous":
            raise AuthError("posting receipts needs a token")
        raise Forbidden(f"token {ident.name!r} may not read any topic")
    parsed = await _read_receipts(request)
    now = time.time()
    for r in parsed:
        if r.topic and not ident.grant.allows("read", r.topic):
            raise Forbidden(f"token {ident.name!r} may not read topic {r.topic!r}")
    topics = await state.to_thread(state.store.topics_of, list({r.id for r in parsed}))
    window = state.cfg.limits.retention_age
    by_device: dict[tuple[str, str], list[tuple[str, str, float]]] = defaultdict(list)
    synced: list[StateEvent] = []
    acked: list[acks.Ack] = []
    for r in parsed:
        topic = topics.get(r.id)
        if topic is None or not ident.grant.allows("read", topic):
            continue
        if r.topic and r.topic != topic:
            continue  # not that message's topic: as unknown
        at = _receipt_time(r.time, now, window)
        by_device[r.device, r.device_name].append((r.id, r.state, at))
        if r.state in SYNCED:
            synced.append(StateEvent(r.id, r.state, r.device, at, topic, r.device_name))
        if r.state == "acknowledged":
            acked.append(acks.Ack(r.id, r.device, r.device_name, at))
    # One transaction for the receipts and the owner's synced states (forward only), then
    # those that moved go to the owner's open streams as message_state events.
    groups = [(dev, name, events) for (dev, name), events in by_device.items()]
    accepted, moved = await state.to_thread(
        state.store.record_receipts, groups, synced, owner=ident.name,
        max_devices=_DEVICES_PER_OWNER,
    )  # fmt: skip
    if acked:  # the first acknowledgement of each message: who, for GET /v1/messages/<id>/ack
        await acks.note_acks(request, ident.name, acked)
    if moved:
        state.hub.send_states(ident.name, moved)
    return web.json_response({"accepted": accepted, "ignored": len(parsed) - accepted})


async def _read_receipts(request: web.Request) -> list[_Receipt]:
    """The body as receipts (at most 1,000, 256 KiB); MessageError naming what is wrong."""
    from edge_relay.server import _read_body

    body = await _read_body(request, 256 * 1024)
    try:
        text = body.decode("utf-8")
        items = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MessageError("body is not JSON", field="body") from None
    check_unicode(text, items, "body")
    if not isinstance(items, list) or len(items) > 1000:
        raise MessageError("body must be a list of at most 1000 receipts", field="body")
    return [_receipt(item, i) for i, item in enumerate(items)]


class _Receipt(NamedTuple):
    id: str
    state: str
    device: str
    device_name: str
    time: float | None
    topic: str


def _receipt(item: Any, i: int) -> _Receipt:
    if not isinstance(item, dict):
        raise MessageError(f"receipt {i} is not an object", field="receipts")
    mid = check_id(item.get("id"))
    st = item.get("state")
    if st not in STATES:
        raise MessageError(f"receipt {i}: state must be one of {', '.join(STATES)}", "state")
    dev = item.get("device", "")
    name = item.get("device_name", "")
    at = item.get("time")
    topic = item.get("topic", "")
    for value, field in ((dev, "device"), (name, "device_name"), (topic, "topic")):
        if not isinstance(value, str) or len(value) > 128 or not _printable(value):
            raise MessageError(f"receipt {i}: {field} must be a short string", field=field)
    if at is not None and (
        isinstance(at, bool) or not isinstance(at, int | float) or not 0 <= at < 2**40
    ):
        raise MessageError(f"receipt {i}: time must be a unix time", field="time")
    return _Receipt(mid, st, dev, name, None if at is None else float(at), topic)


_CLOCK_SKEW = 60.0  # seconds a client's clock may run ahead of the relay's
# Devices one caller may report per message: a person's phone, laptop, tray... and no more,
# so one token cannot swell /v1/stats or the receipts table with invented device names.
_DEVICES_PER_OWNER = 16


def _receipt_time(at: float | None, now: float, window: float) -> float:
    """The client's time if it is plausible, else the relay's: a receipt happened after the
    message was stored (at most ``window`` = the retention age ago) and not in the future.

    A client's time is kept within that window because an agent that was offline posts its
    receipts late and their time is when the user saw the message; a far-off time (a clock
    at 1970, or one chosen to reorder someone's list) is replaced, not refused, so a device
    with a bad clock still reports.
    """
    if at is None or not now - window <= at <= now + _CLOCK_SKEW:
        return now
    return at


def _printable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return text.isprintable()


async def receipts_get(request: web.Request) -> web.Response:
    """``GET /v1/messages/<id>/receipts``: every owner's receipts, for a caller who may read
    the message: as a list, and per device (``devices``: owner, device, its name, the furthest
    state and each state's time). An unknown id and one the caller may not read get the same 404,
    naming no topic (a 401/403 would say the id exists, and where)."""
    state: RelayState = request.app["state"]
    mid = check_id(request.match_info["id"])
    ident = state.identify(request)
    stored = await state.to_thread(state.store.get, mid)
    if stored is None or not ident.grant.allows("read", stored.message.topic):
        from edge_relay.server import error

        return error(404, f"no message with id {mid!r} that this caller may read")
    rows = await state.to_thread(state.store.receipts_by_owner, mid)
    names = await state.to_thread(state.store.device_names, mid)
    out = []
    for o, d, s, t in rows:
        item: dict[str, Any] = {"owner": o, "device": d, "state": s, "time": t}
        if (o, d) in names:
            item["device_name"] = names[o, d]
        out.append(item)
    return web.json_response(
        {"id": mid, "topic": stored.message.topic, "time": stored.message.time,
         "state": stored.state, "receipts": out, "devices": by_device(rows, names)}
    )  # fmt: skip
