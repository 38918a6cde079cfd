"""Re-alerts for messages that must be acknowledged: the I/O around ``agent.ackcore``.

``ReAlerter.run`` is one owned task of the agent's TaskGroup. It reads the schedule row due
first (the store's ``realerts`` table, migration 013), sleeps until its due time — or until
``wake()`` says the schedule changed — and then asks ``ackcore.decide``: stop (acknowledged,
gone or expired: the row is dropped), hold (paused or quiet hours, priority below 5) or
alert (a new notification at urgency critical with sound, straight to the backend: the burst
guard does not fold an alert that insists). No polling: with nothing due it sleeps on the
event, so an idle agent costs no CPU.

After a start it first waits to be connected (at most ``OFFLINE_WAIT``) and ``CATCH_UP``
seconds more, so the states it missed while down are applied before anything re-alerts.
Before each alert it may ask the relay (``probe``, agent.ackprobe) whether someone with
another token acknowledged it.
The schedule is in the store, so a SIGKILLed agent resumes it after a restart; a message
acknowledged meanwhile (here, or on another device and synced here) has lost its row to the
store's trigger and is never shown again. A kill between the alert and the row's move repeats
that one alert after the restart, never an acknowledged one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from agent import ackcore, dnd, rules
from agent.ackprobe import AckProbe
from agent.config import AgentConfig
from agent.errors import EdgepushError
from agent.notify.gate import local_minute
from agent.store import Store, Stored
from agent.store.acks import Realert

if TYPE_CHECKING:
    from agent.notify import Notifier
    from agent.transports import Transport

log = logging.getLogger("pushagent.realert")

CATCH_UP = 2.0
"""Seconds after the first connection before the first re-alert: what happened while the
agent was down (an acknowledgement replayed with ``since=``, or queued in its MQTT session)
arrives first, so a restarted agent does not repeat an alert another device acknowledged."""
RETRY_ON_ERROR = 5.0
"""Seconds before the next look at the schedule after a store error."""
OFFLINE_WAIT = 30.0
"""How long a (re)started agent waits for a connection before it re-alerts anyway: a device
that cannot hear the acknowledgement must still insist."""

Show = Callable[[Sequence[Stored]], Awaitable[None]]
Probe = Callable[[str], Awaitable[bool]]


class ReAlerter:
    """The agent's re-alert task (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        show: Show,
        *,
        quiet_hours: str | None = None,
        probe: Probe | None = None,
        close: Callable[[Sequence[Stored]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._show = show
        self._probe = probe
        self._close = close
        self._clock = clock
        self._wake = asyncio.Event()
        self._online = asyncio.Event()
        self._quiet = rules.parse_hhmm_range(quiet_hours) if quiet_hours else None
        self.alerts = 0
        """Re-alerts shown by this run (the status and tests read it)."""

    def wake(self) -> None:
        """The schedule changed (a new ack-required message): look at it again now."""
        self._wake.set()

    def online(self) -> None:
        """The agent is connected (the service calls it on each state change to connected)."""
        self._online.set()

    async def acknowledged(self, ids: Sequence[str]) -> None:
        """These were acknowledged here: close what is on screen of them (a re-alert shown
        while the acknowledgement was being recorded must not stay behind)."""
        if self._close is None:
            return
        items = [s for i in ids if (s := await asyncio.to_thread(self._store.get, i))]
        if items:
            self._close(items)

    async def run(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(OFFLINE_WAIT):
                await self._online.wait()
        await asyncio.sleep(CATCH_UP if self._online.is_set() else 0)
        while True:
            try:
                await self._step()
            except EdgepushError as exc:  # a busy or full store: the next try, not a crash
                log.warning("re-alerts: %s; trying again in %.0f s", exc, RETRY_ON_ERROR)
                await asyncio.sleep(RETRY_ON_ERROR)

    async def _step(self) -> None:
        """Wait for the first due row (or a wake-up), then handle it if it is due."""
        self._wake.clear()  # before the read: a wake-up during it is not lost
        row = await asyncio.to_thread(self._store.realert_next)
        if row is None:
            await self._wake.wait()
            return
        delay = row.due - self._clock()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):  # not wait_for (see service._status)
                    await self._wake.wait()
            return  # read again: something may be due sooner, or this one acknowledged
        await self._due(row)

    async def _due(self, row: Realert) -> None:
        stored = await asyncio.to_thread(self._store.get, row.message_id)
        now = self._clock()
        verdict = ackcore.decide(
            state=stored.state if stored is not None else None,
            expires=row.expires,
            priority=stored.message.priority if stored is not None else 0,
            now=now,
            held=await asyncio.to_thread(self._held, now),
        )
        if (
            verdict == ackcore.ALERT
            and self._probe is not None
            and await self._probe(row.message_id)
        ):
            # acknowledged elsewhere (agent.ackprobe): recorded here, which ends the schedule
            events = [(row.message_id, "acknowledged", now)]
            await asyncio.to_thread(self._store.record_states, events)
            verdict = ackcore.STOP
            if self._close is not None and stored is not None:  # off the screen too
                self._close([Stored(stored.seq, stored.message, "acknowledged", stored.source)])
        if verdict == ackcore.STOP or stored is None:
            await asyncio.to_thread(self._store.realert_done, row.message_id)
            log.debug("re-alerts of %s end (%s)", row.message_id, stored and stored.state)
            return
        count = row.count
        if verdict == ackcore.ALERT:
            if await self._acked(row.message_id):  # meanwhile (the probe can take seconds)
                return
            count += 1
            msg = ackcore.realert_message(stored.message, count)
            await self._show([Stored(stored.seq, msg, stored.state, stored.source)])
            self.alerts += 1
            log.info("re-alert %d of %s (not acknowledged yet)", count, row.message_id)
            if await self._acked(row.message_id) and self._close is not None:
                self._close([stored])  # acknowledged while it was being shown: off again
        await asyncio.to_thread(
            self._store.realert_moved, row.message_id, ackcore.next_due(now, row.retry), count
        )

    async def _acked(self, message_id: str) -> bool:
        now = await asyncio.to_thread(self._store.get, message_id)
        return now is None or now.state in ("acknowledged", "deleted")

    def _held(self, now: float) -> bool:
        """Paused, or in quiet hours (these hold re-alerts below priority 5 only)."""
        if dnd.paused_until(self._store, now) is not None:
            return True
        return self._quiet is not None and rules.in_quiet_hours(self._quiet, local_minute(now))


def realerter(
    cfg: AgentConfig,
    store: Store,
    notifier: Notifier,
    transports: Sequence[Transport],
    close: Callable[[Sequence[Stored]], None],
) -> ReAlerter:
    """The service's re-alert task: straight to the backend (the rules layer's burst guard
    must not fold an alert that insists), asking the connected relay before each alert;
    ``close`` takes off the screen what the relay said someone acknowledged."""
    backend = getattr(notifier, "backend", notifier)
    probe = AckProbe(cfg, lambda: next((t.url for t in transports if t.state == "connected"), None))
    return ReAlerter(store, backend.show, quiet_hours=cfg.quiet_hours, probe=probe, close=close)
