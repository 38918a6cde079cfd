"""The relay's scheduler: hands scheduled messages (ntfy's delayed delivery) to the hub at
their time.

Theory of operation
-------------------
A scheduled message is written to the store's ``scheduled`` table before its publish is
answered (``Hub.schedule``). This task sleeps until the earliest due time, then asks the hub
to release everything due: one store transaction moves the rows into ``messages`` (their
forwards into the outbox) and the hub fans out what was new, in store order, under the same
lock as its writer's commits, so live subscribers see seq order.

Exactly once: the move is all or nothing, and the UNIQUE id skips a message already stored,
so a SIGKILL before the commit leaves the rows scheduled (released at the next start — late
but once, also when the relay was down at their time) and one after it leaves them stored.

No idle polling: with nothing scheduled the task waits on an event that ``wake`` sets (a new
scheduled message, a cancellation). With something pending it sleeps until it is due, but at
most ``cap`` seconds at a time and re-reads the wall clock on waking: a sleep runs on the
monotonic clock, so a wall-clock jump forward (NTP after boot on a device without an RTC)
would otherwise be noticed only at the old deadline.

Owned: a failure (a busy or broken store, a bug) is logged and the loop restarts after a
backoff; it never ends silently. ``clock`` is injectable so tests can move time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from agent.errors import StoreBusy
from agent.store import Store
from agent.store.scheduled import RELEASE_MAX

log = logging.getLogger(__name__)


class Scheduler:
    """Runs the release loop as an owned task. Use ``async with``."""

    def __init__(
        self,
        store: Store,
        release: Callable[[float], Awaitable[int]],
        *,
        clock: Callable[[], float] = time.time,
        cap: float = 1.0,
        retry: float = 1.0,
    ) -> None:
        self.store = store
        self.release = release
        """Release what is due at the given time; returns how many rows it moved."""
        self.clock = clock
        self.cap = cap
        self.retry = retry
        self.released = 0
        """Messages released (stored and fanned out) since start."""
        self.failures = 0
        """Times the loop failed and was restarted (``/v1/health``: a stall never hides)."""
        self.caught_up = 0
        """Times the loop found nothing due and went to sleep (its first: the backlog a
        restart found is released)."""
        self.next_due: int | None = None
        """The earliest due time last read from the store (None: nothing scheduled)."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Scheduler:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="scheduler")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """Re-read the earliest due time now (a message was scheduled or cancelled)."""
        self._wake.set()

    async def _run(self) -> None:
        delay, last = self.retry, 0.0
        while True:
            try:
                await self._loop()
            except StoreBusy as exc:
                log.warning("scheduler: store busy (%s); retrying in %g s", exc, delay)
            except Exception:
                log.exception("scheduler failed; restarting in %g s", delay)
            self.failures += 1
            now = time.monotonic()
            if now - last > 300:  # an isolated failure: back to the short retry
                delay = self.retry
            last = now
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _loop(self) -> None:
        while True:
            self._wake.clear()  # before the read: a schedule after it sets it again
            due = self.next_due = await asyncio.to_thread(self.store.next_due)
            now = self.clock()
            if due is not None and due <= now:
                moved = await self.release(now)
                self.released += moved
                if moved >= RELEASE_MAX:
                    await asyncio.sleep(0)  # a huge backlog: let the loop breathe between
                continue
            self.caught_up += 1
            timeout = None if due is None else min(due - now, self.cap)
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass
