"""What goes to live subscribers: a stored message or synced state encoded once for all of
them (``Live``, ``LiveState``: the ntfy JSON and the WebSocket text frame), and one live
subscription with its bounded queue (``Subscriber``).

Part of the hub (``edge_relay.hub``, whose docstring has the theory of operation: the replay/
live seam, overflow, the fast path): the hub's fan-out offers to a ``Subscriber``, the stream
(``edge_relay.streams``) takes from it, and the replay (``edge_relay.replay``) encodes stored
rows as the same ``Live`` items.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence

from agent.envelope import Message, dumps, encode
from agent.states import StateEvent
from agent.store import Stored
from edge_relay.core import ACTION_EVENTS, Filters, event_of
from edge_relay.livequeue import LiveQueue

# The hub's logger, as before this module was split from it: a slow subscriber's line keeps
# its name.
log = logging.getLogger("edge_relay.hub")


def wire(item: Stored) -> str:
    """The ntfy event of a message (``message``, ``poll_request``, ``message_clear``,
    ``message_delete``), as compact JSON."""
    return dumps(event_json(item.message))


def event_json(msg: Message) -> dict[str, object]:
    """A message as ntfy sends it: with its ``event``; a clear or delete carries no message
    text and no priority (ntfy's ``NewActionMessage`` leaves them empty, so they are omitted
    from its JSON), only the id, time, expiry, topic and ``sequence_id``."""
    out = {**encode(msg), "event": event_of(msg)}
    if out["event"] in ACTION_EVENTS:
        del out["message"], out["priority"]
    return out


class Live:
    """A stored message on its way to live subscribers, encoded once for all of them: its JSON
    text and the same as one unmasked WebSocket text frame (RFC 6455 section 5.2)."""

    __slots__ = ("frame", "stored", "text")

    def __init__(self, stored: Stored) -> None:
        self.stored = stored
        self.text = wire(stored)
        self.frame = text_frame(self.text.encode())


class LiveState:
    """A synced state on its way to one owner's live subscribers (``message_state``), encoded
    once: it is not a stored message, so it has no seq and never moves the replay seam."""

    __slots__ = ("frame", "id", "text", "topic")

    def __init__(self, event: StateEvent) -> None:
        self.id = event.id
        self.topic = event.topic
        self.text = dumps(event.wire())
        self.frame = text_frame(self.text.encode())


Framed = Live | LiveState


def frame_head(first: int, n: int) -> bytes:
    """An unmasked WebSocket frame's header (RFC 6455 section 5.2): ``first`` (FIN, RSV bits
    and opcode) and the payload length ``n`` in its 7-bit, 16-bit or 64-bit form."""
    if n < 126:
        return bytes((first, n))
    if n < 65536:
        return bytes((first, 126)) + n.to_bytes(2, "big")
    return bytes((first, 127)) + n.to_bytes(8, "big")


def text_frame(data: bytes) -> bytes:
    """``data`` as one unmasked, uncompressed WebSocket text frame (RSV1 clear: RFC 7692
    lets a permessage-deflate connection carry uncompressed messages)."""
    return frame_head(0x81, len(data)) + data


class Subscriber:
    """One live subscription: its topics, filters and bounded send queue."""

    # One per open stream, so its size is paid per idle connection: slots and a LiveQueue
    # instead of a __dict__ and an asyncio.Queue: 4,264 -> 529 bytes each (tracemalloc).
    __slots__ = ("_filtered", "dead", "direct", "filters", "last_seq", "on_overflow", "owner",
                 "queue", "topics")  # fmt: skip

    def __init__(
        self,
        topics: Iterable[str],
        filters: Filters,
        *,
        queue_size: int,
        on_overflow: Callable[[], None],
        owner: str | None = None,
    ) -> None:
        self.topics = frozenset(topics)
        self.filters = filters
        self.owner = owner
        """The token name the stream was opened with: its owner's synced states reach it."""
        self.queue: LiveQueue[Framed] = LiveQueue(queue_size)
        self.on_overflow = on_overflow
        self.dead = False
        self.last_seq = 0
        self.direct: Callable[[Sequence[Framed]], bool] | None = None
        """Set by a caught-up subscriber whose sink can take messages without waiting (a
        WebSocket): fan-out then writes them to it directly, all of one commit group in one
        write, with no task wake-up; it returns False when the connection's buffer is over its
        limit (a slow reader)."""
        self._filtered = filters.active

    def offer(self, item: Live) -> None:
        """Queue a live message (never waits); overflow kills this subscriber only."""
        self.offer_many([item])

    def offer_many(self, items: list[Live]) -> int:
        """Queue live messages, in seq order (never waits); overflow kills this subscriber
        only. Returns how many were written directly to the subscriber's socket."""
        if self.dead:
            return 0
        if self._filtered:
            items = [i for i in items if self.filters.match(i.stored.message)]
        if self.direct is not None and self.queue.empty():
            fresh = [i for i in items if self.fresh(i.stored)]
            if not fresh:
                return 0
            if self.direct(fresh):
                return len(fresh)
            self._overflow()
            return 0
        self._enqueue(items)
        return 0

    def offer_states(self, items: list[LiveState]) -> None:
        """Queue synced states (never waits), behind any message already queued; no filter
        and no seq: a state is for whatever message of these topics it names."""
        if self.dead:
            return
        if self.direct is not None and self.queue.empty():
            if not self.direct(items):
                self._overflow()
            return
        self._enqueue(items)

    def _enqueue(self, items: Sequence[Framed]) -> None:
        for item in items:
            try:
                self.queue.put_nowait(item)
            except asyncio.QueueFull:
                self._overflow()
                break

    def _overflow(self) -> None:
        self.dead = True
        log.warning("subscriber to %s too slow: disconnected", ",".join(sorted(self.topics)))
        self.on_overflow()

    def fresh(self, item: Stored) -> bool:
        """True if ``item`` was not sent yet (seq 0 = uncached, always fresh)."""
        if item.seq == 0:
            return True
        if item.seq <= self.last_seq:
            return False
        self.last_seq = item.seq
        return True

    async def next(self, timeout: float) -> Framed | None:
        """The next live message not yet sent (or state), or None after ``timeout`` s
        (keepalive time)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if not self.queue.empty():
                item = self.queue.get_nowait()  # the busy path: no timer, no extra task
            else:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                try:
                    # asyncio.timeout, not wait_for: no extra task per wait (one per message
                    # per idle subscriber at fan-out time)
                    async with asyncio.timeout(remaining):
                        item = await self.queue.get()
                except TimeoutError:
                    return None
            if isinstance(item, LiveState) or self.fresh(item.stored):
                return item
