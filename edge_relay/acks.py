"""``GET /v1/messages/<id>/ack``: who acknowledged a message, and waiting for it.

Theory of operation
-------------------
An ``acknowledged`` receipt (``POST /v1/receipts``; agent.realert has the agent's side) for
a stored message is recorded in the store's ``acks`` table by ``note_acks``; only the
first one per message is kept, in the relay's order of recording (two devices acknowledging
in the same second: the one whose POST committed first is "who"; the devices' clocks, which
may be skewed, decide nothing). Recording it wakes every request waiting on that id.

``GET /v1/messages/<id>/ack`` (``?wait=N``: up to N seconds, at most ``MAX_WAIT``) answers
at once if the message is acknowledged, else waits until it is or the time is up. Always
200 for a message the caller may read::

    {"id": "...", "topic": "...", "ack_required": true, "acknowledged": true,
     "device": {"id": "pushagent-...", "name": "laptop"}, "owner": "alice",
     "time": 1733140000.0, "recorded": 1733140000.2}

or ``"acknowledged": false`` (with ``"expires"`` when the message asked for an ack: the time
its re-alerts end). An unknown id and one the caller may not read get the same 404 (ntfy's
error shape), a ``wait`` that is not a number of seconds 400. A waiting request holds no
store connection and no thread: one ``asyncio.Event`` per waited-for id, dropped when its
last waiter leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from aiohttp import web

from agent.envelope import check_id, dumps
from agent.errors import MessageError
from agent.store.acks import AckRecord
from edge_relay.ntfy_api import error
from edge_relay.state import RelayState

MAX_WAIT = 600.0
"""The longest ``wait`` a request may ask for (seconds); more is clamped to it."""


class AckWaiters:
    """The ids someone is waiting on, and the event that releases them."""

    def __init__(self) -> None:
        self._events: dict[str, tuple[asyncio.Event, int]] = {}

    def notify(self, message_id: str) -> None:
        entry = self._events.get(message_id)
        if entry is not None:
            entry[0].set()

    @contextlib.contextmanager
    def waiting(self, message_id: str) -> Iterator[asyncio.Event]:
        event, n = self._events.get(message_id, (asyncio.Event(), 0))
        self._events[message_id] = (event, n + 1)
        try:
            yield event
        finally:
            event, n = self._events[message_id]
            if n <= 1:
                del self._events[message_id]
            else:
                self._events[message_id] = (event, n - 1)

    def __len__(self) -> int:
        return len(self._events)


WAITERS = web.AppKey("ack_waiters", AckWaiters)


class Ack(NamedTuple):
    """One acknowledgement as ``POST /v1/receipts`` checked it."""

    id: str
    device: str
    device_name: str
    time: float


async def note_acks(request: web.Request, owner: str, items: Iterable[Ack]) -> None:
    """Record the first acknowledgement of each message (the caller checked that ``owner``
    may read them; one transaction for all) and release the requests waiting for it."""
    state: RelayState = request.app["state"]
    rows = [(a.id, a.device, a.device_name, a.time) for a in items]
    for mid in await state.to_thread(state.store.ack_record_many, rows, owner=owner):
        request.app[WAITERS].notify(mid)


async def ack_get(request: web.Request) -> web.Response:
    """``GET /v1/messages/<id>/ack[?wait=N]`` (see the module docstring)."""
    state: RelayState = request.app["state"]
    mid = check_id(request.match_info["id"])
    wait = _wait(request.query.get("wait", "0"))
    ident = state.identify(request)
    stored = await state.to_thread(state.store.get, mid)
    if stored is None or not ident.grant.allows("read", stored.message.topic):
        return error(404, f"no message with id {mid!r} that this caller may read")
    record = await state.to_thread(state.store.ack_get, mid)
    if record is None and wait > 0:
        with request.app[WAITERS].waiting(mid) as event:
            # checked again under the waiter: an ack recorded in between is not missed
            record = await state.to_thread(state.store.ack_get, mid)
            if record is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await event.wait()
                record = await state.to_thread(state.store.ack_get, mid)
    extra = stored.message.extra
    body: dict[str, Any] = {"id": mid, "topic": stored.message.topic,
                            "ack_required": extra.get("ack") == "required"}  # fmt: skip
    body.update(_answer(record, stored.message.time, extra))
    return web.json_response(body, dumps=dumps)


def _answer(record: AckRecord | None, at: int, extra: dict[str, Any]) -> dict[str, Any]:
    if record is None:
        out: dict[str, Any] = {"acknowledged": False}
        expire = extra.get("ack_expire")
        if isinstance(expire, int | float) and not isinstance(expire, bool):
            out["expires"] = at + int(expire)
        return out
    return {"acknowledged": True,
            "device": {"id": record.device, "name": record.device_name or record.device},
            "owner": record.owner, "time": record.time, "recorded": record.recorded}  # fmt: skip


def _wait(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise MessageError(f"wait must be a number of seconds, not {text[:40]!r}", field="wait")
    return min(value, MAX_WAIT)
