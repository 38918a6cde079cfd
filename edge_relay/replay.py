"""The replay of a subscription (``since=``): stored messages, then pending scheduled ones and
the owner's synced states, before the stream goes live (the order is ``edge_relay.streams``').

The replay cache: when N devices come back after an outage they each replay the same backlog,
and each stored message used to be decoded from its row, encoded as ntfy JSON (``live.wire``)
and framed once per device. ``ReplayCache`` keeps what a row became (a ``live.Live``: the
stored message, its JSON text and its uncompressed WebSocket frame) by seq, so the next
device's replay of that row costs a dictionary lookup and a tuple comparison: 20 agents
replaying 1,000 messages took the relay 0.44-0.65 s of CPU without it, 0.11-0.26 s with it
(bench/edge_latency.py; docs/PERFORMANCE.md, "Edge latency").

A hit must be the same row, not only the same seq: a row can change in place (its state, an
attachment URL rewritten by the file cache), and a changed row is decoded again. So the store
stays the one source of what is replayed (which seqs, in which order, deleted or not); the
cache only saves re-encoding. Its bytes are bounded (``REPLAY_CACHE_BYTES``, least recently
used out first); it lives on the event loop.

The bytes on the wire are the same as before the cache: the JSON text is ``live.wire``'s, an
uncompressed WebSocket gets ``live.text_frame`` of it (what aiohttp's ``send_str`` writes), a
deflated one gets each message through its connection's own Deflater, and SSE/JSON/raw
streams format the text as they did (tests/test_relay_replay.py).
"""

from __future__ import annotations

from collections import OrderedDict
from sys import getsizeof
from typing import TYPE_CHECKING

from agent.store import Row, Store, Stored
from agent.store.schema import _COLUMNS
from agent.timeparse import Since
from edge_relay.live import Live, LiveState, Subscriber, wire

if TYPE_CHECKING:
    from edge_relay.state import RelayState
    from edge_relay.streams import Sink

PAGE = 500
REPLAY_CACHE_BYTES = 8 * 1024 * 1024
"""What the replay cache may hold, each entry counted by ``_cost`` (what it holds in memory):
~4,400 typical notices, a backlog of that many replayed by any number of devices at once; a
larger one still replays correctly, decoded again past the cache."""
_ENTRY = 860  # the tuples, Message, Stored, Live and the short fields' objects: with
# ``_cost``'s strings, a typical notice (title, 2 tags, 219-byte frame) is 1,911 bytes real
# and counted 1,910 (tracemalloc, 3,000 rows)
_PARSED = tuple(2 + _COLUMNS.index(c) for c in ("tags", "actions", "attachment", "extra"))
"""Row columns (after seq and state) that decode parses into new objects, about as large as
their JSON text; the other columns' strings are shared by the row and its Message."""


def _cost(row: Row, live: Live) -> int:
    """The bytes an entry holds: its row's strings, the decoded copies of its JSON columns,
    its JSON text and its frame. By each object's size, not its UTF-8 length: one emoji makes
    a whole str 4 bytes a character (PEP 393), 3.9x what 2 x the frame counted for a
    4 KiB message (tracemalloc); an inline ``data:`` attachment is held four times."""
    size = _ENTRY + getsizeof(live.text) + len(live.frame)
    for value in row:
        if isinstance(value, str):
            size += getsizeof(value)
    for i in _PARSED:
        value = row[i]
        if isinstance(value, str):
            size += getsizeof(value)
    return size


class ReplayCache:
    """Rows already turned into ``Live`` messages, by seq, least recently used out first."""

    __slots__ = ("_entries", "hits", "limit", "misses", "size")

    def __init__(self, limit: int = REPLAY_CACHE_BYTES) -> None:
        self.limit = limit
        self.size = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[int, tuple[Row, Live, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def live(self, row: Row) -> Live:
        """The ``Live`` message of ``row`` (a ``Store.query_rows`` row): the one built for an
        equal row earlier, or a new one."""
        seq = row[0]
        entries = self._entries
        hit = entries.get(seq)
        if hit is not None:
            if hit[0] == row:
                self.hits += 1
                entries.move_to_end(seq)
                return hit[1]
            self._drop(seq)  # the row changed in place: its old encoding is stale
        self.misses += 1
        live = Live(Store.decode(row))
        cost = _cost(row, live)
        if cost > self.limit:
            return live  # larger than the whole cache: encoded for this replay only
        entries[seq] = (row, live, cost)
        self.size += cost
        while self.size > self.limit:
            self._drop(next(iter(entries)))
        return live

    def _drop(self, seq: int) -> None:
        self.size -= self._entries.pop(seq)[2]


async def replay(state: RelayState, sink: Sink, sub: Subscriber, since: Since) -> None:
    """Send stored messages after ``since``, page by page, remembering the last seq sent."""
    cache = state.replay_cache
    after: int | None = None
    while True:
        first = after is None
        page_since = since if first or since.kind == "time" else None
        rows: list[Row] = await state.to_thread(
            state.store.query_rows, topics=sub.topics, since=page_since, after_seq=after,
            limit=PAGE, newest=since.kind == "latest",
        )  # fmt: skip
        page: list[Live] = []
        for row in rows:
            live = cache.live(row)
            if sub.fresh(live.stored) and sub.filters.match(live.stored.message):
                page.append(live)
        if page:
            await sink.send_lives(page)
            state.metrics.delivered.inc(len(page))
        if len(rows) < PAGE or since.kind == "latest":
            return
        after = rows[-1][0]


async def replay_states(state: RelayState, sink: Sink, sub: Subscriber, since: Since) -> None:
    """After the messages: the owner's synced states that changed since the subscriber's
    position (by the relay's clock: when the ``since=`` message was stored, or the ``since=``
    time), so a device that was away hears what its other devices did meanwhile. States
    arriving live meanwhile are queued behind; a state sent twice is a no-op at the agent."""
    if sub.owner is None or since.kind in ("latest", "none"):
        return
    after = 0.0
    if since.kind == "time" and since.time is not None:
        after = float(since.time)
    elif since.kind == "id" and since.id is not None:
        after = await state.to_thread(state.store.received_at, since.id) or 0.0
    events = await state.to_thread(state.store.states_since, sub.owner, sub.topics, after)
    for ev in events:
        await sink.send_state(LiveState(ev))


async def replay_scheduled(state: RelayState, sink: Sink, sub: Subscriber) -> None:
    """The pending scheduled messages of the subscription, soonest first, after the stored
    ones (their ``time`` is later). They carry no seq (not stored yet): sending one does not
    move the seam, and it comes again, live, when it is delivered (as in ntfy)."""
    pending = await state.to_thread(state.store.scheduled_messages, sub.topics)
    for m in pending:
        item = Stored(0, m)
        if sub.filters.match(m):
            await sink.send_message(item, wire(item))
            state.metrics.delivered.inc()
