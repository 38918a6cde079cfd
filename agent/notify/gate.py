"""The rules layer: a notifier that applies ``agent.rules`` and hands the rest to a backend.

The service sees one notifier; it does not know about rules. This layer reads the clock, the
local time of day and the pause (from the store) and passes them to the pure ``Gate``. Held
back messages stay stored with their state unchanged, so they are visible in history.
Bursts: summaries that are not due yet are shown later by a small task this layer owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self

from agent import dnd, rules
from agent.config import AgentConfig
from agent.envelope import Message, new_id
from agent.store import Store, Stored
from agent.store.sequences import event_of

if TYPE_CHECKING:
    from agent.notify import Notifier

log = logging.getLogger("pushagent.rules")

SUMMARY_SEQ = 0
"""Summaries are not stored messages: backends report no events for ``seq == 0``."""


def policy_from(cfg: AgentConfig, *, storm_guard: bool = True) -> rules.Policy:
    """The pure policy for a configuration. ``storm_guard``: fold bursts even when the config
    sets no ``burst`` (the desktop: a screen must never get 10,000 notifications)."""
    count: int | None
    count, seconds = rules.DEFAULT_BURST if storm_guard else (None, rules.DEFAULT_BURST[1])
    if cfg.burst is not None:
        count, seconds = cfg.burst.count, cfg.burst.seconds
    return rules.Policy(
        rules=tuple(rules.TopicRule(r.topic, r.min_priority, r.mute) for r in cfg.rules),
        quiet_hours=rules.parse_hhmm_range(cfg.quiet_hours) if cfg.quiet_hours else None,
        quiet_hours_strict=cfg.quiet_hours_strict,
        burst_count=count,
        burst_seconds=seconds,
    )


def local_minute(now: float) -> int:
    t = time.localtime(now)
    return t.tm_hour * 60 + t.tm_min


def summary_item(summary: rules.Summary, now: float) -> Stored:
    """A burst summary as something a backend can show (never stored)."""
    msg = Message(
        id=new_id(), time=int(now), topic=summary.topic, title=summary.topic,
        message=summary.text, tags=("summary",),
    )  # fmt: skip
    return Stored(seq=SUMMARY_SEQ, message=msg)


class RulesNotifier:
    """Rules first, then ``backend``. An async context manager that owns its flush task."""

    hand_off_size = 0  # whole batches: bursts are judged over what arrived together

    def __init__(
        self,
        backend: Notifier,
        policy: rules.Policy,
        store: Store | None,
        *,
        clock: Callable[[], float] = time.time,
        minute: Callable[[float], int] = local_minute,
    ) -> None:
        self.backend = backend
        self.name = backend.name
        self.gate = rules.Gate(policy)
        self._store = store
        self._clock = clock
        self._minute = minute
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.held: Counter[str] = Counter()  # verdict → count, for status and tests

    async def __aenter__(self) -> Self:
        await self.backend.__aenter__()
        self._task = asyncio.get_running_loop().create_task(self._flusher())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.backend.__aexit__(exc_type, exc, tb)

    async def close(self, items: Sequence[Stored]) -> None:
        """Take ``items`` off the screen (handled on another device), if the backend can."""
        close = getattr(self.backend, "close", None)
        if close is not None:
            await close(items)

    async def show(self, items: Sequence[Stored]) -> None:
        """Apply the rules to ``items`` and show what passes (plus any due summaries)."""
        closing = [s for s in items if event_of(s.message) != "message"]
        if closing:  # clears and deletes close what is shown: no rule holds them back
            await self.backend.show(closing)
            items = [s for s in items if event_of(s.message) == "message"]
            if not items:
                return
        now = self._clock()
        paused = None
        if self._store is not None:
            paused = await asyncio.to_thread(dnd.paused_until, self._store, now)
        decision = self.gate.decide(
            [rules.Item(s.message.id, s.message.topic, s.message.priority) for s in items],
            now=now,
            minute=self._minute(now),
            paused_until=paused,
        )
        verdicts = dict(decision.verdicts)
        shown = [s for s in items if verdicts.get(s.message.id) == rules.SHOW]
        for verdict, n in Counter(verdicts.values()).items():
            if verdict != rules.SHOW:
                self.held[verdict] += n
                log.debug("%d message(s) held back: %s", n, verdict)
        shown += [summary_item(s, now) for s in decision.summaries]
        if shown:
            await self.backend.show(shown)
        if self.gate.pending:
            self._wake.set()

    async def _flusher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            due = self.gate.next_flush()
            while due is not None:
                await asyncio.sleep(max(0.0, due - self._clock()))
                now = self._clock()
                summaries = self.gate.flush(now=now)
                if summaries:
                    try:
                        await self.backend.show([summary_item(s, now) for s in summaries])
                    except Exception:  # a lost summary must not end later ones
                        log.exception("could not show %d burst summaries", len(summaries))
                due = self.gate.next_flush()
