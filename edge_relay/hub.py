"""The hub: stores every message (group commit), then fans it out to live subscribers.

Theory of operation
-------------------
Publishes go through one writer task. It takes every publish waiting at that moment, stores
them in ONE ``insert_batch`` transaction, and only then offers the stored messages to the
subscribers, in ``seq`` order. So a subscriber never sees a message that a restarted relay
would not have, and fan-out order is store order.

The seam between replay and live (``since=``): a subscriber is registered for live messages
FIRST, then replays from the store. A message committed before the registration is found by
the replay; one committed after it is in the live queue; one committed in between may be in
both, and the subscriber drops any live message whose ``seq`` is not above the last one it
sent. No gap, no duplicate.

Each subscriber (``edge_relay.live``, with the encoded items it is offered) has a bounded
queue. ``offer`` never waits: when the queue is full the subscriber is marked dead and its
connection aborted (it resumes with ``since=``), so one slow reader never slows the writer,
the other subscribers, or grows memory.

One client's bad publish never fails another's: ``publish`` checks each message with
``core.check_storable`` before it joins a group, and a group whose transaction still fails
(for any reason but ``StoreBusy``, which is transient and everyone's) is retried member by
member, so only the member that cannot be stored gets the error.

Scheduled messages (ntfy's delayed delivery) are stored by ``schedule`` in the store's
``scheduled`` table and released by the scheduler (``edge_relay.schedule``) at their time:
``_release`` moves the due rows into ``messages`` in one transaction and fans them out, under
the same lock as the writer's commit-then-fan-out, so no two commits' fan-outs interleave and
a subscriber never sees a lower seq after a higher one (it would drop it as already sent).

Synced read state (edge_relay.receipts): ``send_states`` offers ``message_state`` events to
one owner's subscribers of each state's topic. A state is not a stored message: it has no seq,
passes no filter and never moves the seam; it is queued (or written directly) behind what is
already on its way, and a subscriber resuming with ``since=`` gets the states it missed from
the store (edge_relay.streams).

Fast path: once a WebSocket subscriber has caught up (replay done, queue empty) it sets
``Subscriber.direct``, and fan-out writes the pre-built frames of a commit group's messages to
its socket itself, in seq order, in one write, with no task wake-up; more than 1 MiB waiting
in that socket counts as slow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from agent.e2e import seal
from agent.envelope import Message
from agent.errors import EdgepushError, InvalidState, StoreBusy
from agent.states import StateEvent
from agent.store import Redelivery, Rejected, Store, Stored
from agent.store.scheduled import RELEASE_MAX
from agent.store.sealed import Sealed
from edge_relay.core import check_storable
from edge_relay.live import Live, LiveState, Subscriber
from edge_relay.schedule import Scheduler

log = logging.getLogger(__name__)
_MAX_GROUP = 1000


@dataclass
class _Publish:
    messages: list[Message]
    cache: bool
    source: str
    done: asyncio.Future[list[Stored]]
    redelivery: Mapping[str, Redelivery] | None = None


@dataclass
class Hub:
    """Owns the writer task and the subscriber index. Use ``async with``."""

    store: Store
    forward: Callable[[Message], str | None] | None = None
    """For local publishes: the upstream destination of a message, or None (not forwarded)."""
    on_stored: list[Callable[[list[Stored], str], None]] = field(default_factory=list)
    on_rejected: Callable[[int], None] | None = None
    """Told how many messages a commit kept in ``rejected`` (the health/metrics counter)."""
    _subs: dict[str, set[Subscriber]] = field(default_factory=lambda: defaultdict(set))
    _queue: asyncio.Queue[_Publish] = field(default_factory=asyncio.Queue)
    _task: asyncio.Task[None] | None = None
    delivered: int = 0
    """Messages written straight to caught-up subscribers by fan-out (queued ones are counted
    by their stream task)."""
    on_delivered: Callable[[int], None] | None = None
    """Told, once per fan-out, how many messages fan-out wrote directly (the metrics counter)."""
    clock: Callable[[], float] = time.time
    """The wall clock the scheduler releases by (a test moves it)."""
    schedule_cap: float = 1.0
    """Seconds the scheduler sleeps at most before re-reading the clock (see schedule.py)."""
    scheduler: Scheduler | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held by each commit-then-fan-out (the writer's and the scheduler's release)."""

    async def __aenter__(self) -> Hub:
        self._task = asyncio.get_running_loop().create_task(self._writer(), name="hub-writer")
        self.scheduler = Scheduler(
            self.store, self._release, clock=self.clock, cap=self.schedule_cap
        )
        await self.scheduler.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.scheduler is not None:
            await self.scheduler.__aexit__(*exc)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def schedule(self, message: Message) -> bool:
        """Store ``message`` durably for delivery at its ``time`` (the scheduler releases it
        then: stored, fanned out, forwarded upstream). MessageError for one the store could
        not take, before anything is kept; False if its id is already known."""
        check_storable(message)
        kept = await asyncio.to_thread(self.store.schedule, message)
        if self.scheduler is not None:
            self.scheduler.wake()
        return kept

    async def cancel_scheduled(self, topic: str, sequence_id: str) -> int:
        """Drop pending scheduled messages of ``topic`` and ``sequence_id``; how many."""
        n = await asyncio.to_thread(self.store.cancel_scheduled, topic, sequence_id)
        if self.scheduler is not None:
            self.scheduler.wake()
        return n

    async def _release(self, now: float) -> int:
        """Move what is due at ``now`` into the store and fan it out, as a local publish
        (forwarded upstream by the same rule). Returns how many it stored."""
        not_merged: list[Rejected] = []
        async with self._lock:
            stored = await asyncio.to_thread(
                self.store.release_due, now, forward=self.forward, limit=RELEASE_MAX,
                sealed=seal.is_sealed, not_merged=not_merged,  # as a publish (arrived_sealed)
            )  # fmt: skip
            if stored:
                self._fan_out(stored)
                for callback in self.on_stored:
                    callback(stored, "local")
        self._note_rejected("the scheduler", not_merged)
        return len(stored)

    @property
    def subscriber_count(self) -> int:
        return len({s for subs in self._subs.values() for s in subs})

    def subscribe(self, sub: Subscriber) -> None:
        for topic in sub.topics:
            self._subs[topic].add(sub)

    def unsubscribe(self, sub: Subscriber) -> None:
        for topic in sub.topics:
            subs = self._subs.get(topic)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[topic]

    async def publish(
        self,
        messages: list[Message],
        *,
        cache: bool = True,
        source: str = "local",
        redelivery: Mapping[str, Redelivery] | None = None,
    ) -> list[Stored]:
        """Store (unless ``cache`` is off) then fan out; returns the messages that were new.

        ``redelivery`` is passed to ``Store.insert_batch`` (the upstream's id-less messages).
        MessageError, before anything is stored, for a message the store could not take.
        """
        for m in messages:
            check_storable(m)  # refused here, alone, not in the commit it would share
        done: asyncio.Future[list[Stored]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Publish(messages, cache, source, done, redelivery))
        return await done

    async def _writer(self) -> None:
        while True:
            group = [await self._queue.get()]
            while not self._queue.empty() and len(group) < _MAX_GROUP:
                group.append(self._queue.get_nowait())
            try:
                async with self._lock:
                    await self._commit(group)
            except Exception as exc:  # a bug must fail these publishes, not hang all later ones
                log.exception("hub writer: commit failed")
                for p in group:
                    if not p.done.done():
                        p.done.set_exception(InvalidState(f"hub writer failed: {exc}"))

    async def _commit(self, group: list[_Publish]) -> None:
        by_source: dict[str, list[_Publish]] = defaultdict(list)
        for p in group:
            if p.cache:
                by_source[p.source].append(p)
        for source, pubs in by_source.items():
            await self._store(source, pubs)
        for p in group:
            if not p.cache:
                live = [Stored(0, m) for m in p.messages]
                self._fan_out(live)
                if not p.done.done():
                    p.done.set_result(live)

    async def _store(self, source: str, pubs: list[_Publish]) -> None:
        """Store ``pubs`` in one transaction and settle their futures.

        ``StoreBusy`` (locked, disk full) is nobody's fault and passes: every member gets it
        (503, retry). Any other failure of a group of several is retried member by member, so
        only the publish that cannot be stored gets the error and the others are stored once
        (a failed transaction stored nothing). One log line per group, however many failed.
        """
        failed = await self._insert(source, pubs)
        if failed is None or isinstance(failed, StoreBusy):
            return
        if len(pubs) > 1:
            alone = [(p, f) for p in pubs if (f := await self._insert(source, [p])) is not None]
            log.warning("hub: a commit of %d publishes from %s failed (%s); stored one by one, "
                        "%d could not be: %s", len(pubs), source, _short(failed), len(alone),
                        _short(alone[0][1]) if alone else "-")  # fmt: skip
            failures = [f for _, f in alone]
        else:
            log.warning("hub: cannot store a publish from %s: %s", source, _short(failed))
            failures = [failed]
        bug = next((f for f in failures if not isinstance(f, EdgepushError)), None)
        if bug is not None:  # check_storable let through what the store refuses: shown in full
            log.error("hub: the store refused a message that passed its checks", exc_info=bug)

    async def _insert(self, source: str, pubs: list[_Publish]) -> BaseException | None:
        """One ``insert_batch`` for ``pubs``; settles their futures on success or on
        StoreBusy, and a lone member's on any failure. Returns the failure, if any."""
        messages = [m for p in pubs for m in p.messages]
        not_merged: list[Rejected] = []
        try:
            stored = await asyncio.to_thread(
                self.store.insert_batch,
                messages,
                source=source,
                forward=self.forward if source == "local" else None,
                redelivery={k: v for p in pubs if p.redelivery for k, v in p.redelivery.items()}
                or None,
                encrypted=arrived_sealed(messages),
                not_merged=not_merged,
            )
        except StoreBusy as exc:
            _fail(pubs, exc)
            return exc
        except Exception as exc:  # noqa: BLE001 - whatever failed, _store retries and logs it
            if len(pubs) == 1:
                wrapped = exc if isinstance(exc, EdgepushError) else InvalidState(
                    f"cannot store this message: {_short(exc)}")  # fmt: skip
                _fail(pubs, wrapped)
            return exc
        new = {s.message.id: s for s in stored}
        for p in pubs:
            if not p.done.done():
                p.done.set_result([new[m.id] for m in p.messages if m.id in new])
        self._fan_out(stored)
        for callback in self.on_stored:
            callback(stored, source)
        self._note_rejected(source, not_merged)
        return None

    def _note_rejected(self, source: str, not_merged: list[Rejected]) -> None:
        if not_merged:
            log.warning("hub: %d message(s) from %s kept in rejected: %s", len(not_merged),
                        source, not_merged[0].reason)  # fmt: skip
            if self.on_rejected is not None:
                self.on_rejected(len(not_merged))

    def send_states(self, owner: str, events: Iterable[StateEvent]) -> int:
        """Offer synced states to ``owner``'s live subscribers of each state's topic (all of
        one subscriber's in one write when it is caught up). Returns how many subscribers."""
        batches: dict[Subscriber, list[LiveState]] = {}
        for ev in events:
            live: LiveState | None = None
            for sub in self._subs.get(ev.topic, ()):
                if sub.owner != owner:
                    continue
                live = live or LiveState(ev)  # encoded once, however many subscribers
                batches.setdefault(sub, []).append(live)
        for sub, batch in batches.items():
            sub.offer_states(batch)
        return len(batches)

    def _fan_out(self, stored: list[Stored]) -> None:
        # Per subscriber, the group's messages for it in seq order, so a caught-up WebSocket
        # gets one write (one send syscall) per commit group instead of one per message.
        lives: list[tuple[Live, set[Subscriber]]] = []
        for item in stored:
            subs = self._subs.get(item.message.topic)
            if subs:
                lives.append((Live(item), subs))  # encoded once, however many subscribers
        if not lives:
            return
        written = 0
        if len(lives) == 1:
            one = [lives[0][0]]
            for sub in tuple(lives[0][1]):
                written += sub.offer_many(one)
        else:
            batches: dict[Subscriber, list[Live]] = {}
            for live, subs in lives:
                for sub in subs:
                    batch = batches.get(sub)
                    if batch is None:
                        batches[sub] = [live]
                    else:
                        batch.append(live)
            for sub, batch in batches.items():
                written += sub.offer_many(batch)
        self.delivered += written
        if written and self.on_delivered is not None:
            self.on_delivered(written)


def arrived_sealed(messages: Sequence[Message]) -> list[Sealed | None] | None:
    """Which ``messages`` arrived end-to-end encrypted (the agent's test), for insert_batch,
    whose rule is the agent's: the same id in the other form goes to ``rejected``, never
    merged or dropped unseen. None when none did. The relay never decrypts: ``Sealed()``."""
    if not any(seal.is_sealed(m) for m in messages):
        return None
    return [Sealed() if seal.is_sealed(m) else None for m in messages]


def _fail(pubs: list[_Publish], exc: BaseException) -> None:
    for p in pubs:
        if not p.done.done():
            p.done.set_exception(exc)


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"
