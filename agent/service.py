"""The resident agent: transports → store → notifier, receipts → outbox → upstream.

Theory of operation
-------------------
``AgentService`` is an async context manager owning its tasks in one TaskGroup:

* one ``transport.run(sink)`` per server. The sink stores a batch with ``insert_batch`` in a
  worker thread, with the ``delivered`` receipts in the same transaction, and returns; only
  then does the transport ack. StoreBusy propagates to the transport, which keeps the batch
  and retries (nothing is acked meanwhile).
* the hand-off: stored messages above the store's ``notified_seq`` mark go to
  ``notifier.show()``, and the mark is committed right after, on the loop, with no await in
  between and no store write in flight (``_write_lock``). For a SIGKILL the mark is safe once
  SQLite has written its WAL frame (microseconds after ``show`` returned), so the residual
  window in which a kill repeats a hand-off is that short (docs/MQTT.md). On start, whatever
  was stored but never handed over goes first.
* the outbox drainer: receipts (and anything else queued) are published through the first
  server's transport and removed only after the broker acknowledged them.
* retention pruning at start and hourly; a status file on state changes.

Transports are picked by URL scheme in ``TRANSPORTS`` — the one place a new kind plugs in.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from agent import ackcore, health
from agent.attachments import Downloader
from agent.config import AgentConfig
from agent.e2e.receive import Decryptor
from agent.envelope import new_id
from agent.errors import ConfigError, ConnectionLost, EdgepushError, StoreError
from agent.notify import Notifier, make_notifier
from agent.private import write_private
from agent.realert import ReAlerter, realerter
from agent.statesync import ScreenSync, state_prefix
from agent.store import Store, Stored
from agent.transports import Batch, Transport
from agent.transports.byscheme import make_transports

log = logging.getLogger("pushagent.service")
ACKED = "acknowledged"

PRUNE_EVERY = 3600.0
REKEY_EVERY = 2.0  # seconds between looks at the E2E key index (one stat)
OUTBOX_BATCH = 200


def tune_gc() -> None:
    """Garbage-collector settings for a resident agent process (``pushagent run``).

    A backlog drain allocates container objects for every message (paho's packet parsing, the
    envelope, the batch) faster than the default gen0 threshold of 700 lets them go: a
    20,000-message backlog once triggered ~2,100 collections (16 of them full, up to 0.2 s
    each), 1.8-2.0 s of a 3-4 s drain. A threshold of 20,000 makes that a few dozen
    (bench/mqtt_ingest.py applies the same settings to both sides; the MQTT transport also
    keeps received messages as plain tuples, which the collector stops tracking). Reference
    cycles are still collected, just in larger steps. What is alive after start-up (modules,
    configuration) is frozen out of the collector's view, so a full collection does not walk
    it again.
    """
    gc.set_threshold(20_000, 50, 100)
    gc.freeze()


def client_id(cfg: AgentConfig, store: Store) -> str:
    """This installation's stable client id: configured, or made once and kept in the store."""
    if cfg.client_id:
        return cfg.client_id
    return store.meta_default("client_id", lambda: f"pushagent-{new_id().lower()}")


def receipt_destination(cfg: AgentConfig, store: Store) -> str | None:
    """Where receipts go: ``<receipts.topic_prefix>/<client id>``, or None when turned off."""
    if not cfg.receipts.enabled:
        return None
    return f"{cfg.receipts.topic_prefix}/{client_id(cfg, store)}"


# --- the service ----------------------------------------------------------------------------


class AgentService:
    """The running agent. ``async with AgentService(cfg) as svc: await svc.wait()``."""

    def __init__(self, cfg: AgentConfig) -> None:
        if not cfg.servers:
            raise ConfigError("no server configured: give --server URL or 'servers' in the config")
        if not cfg.topics:
            raise ConfigError("no topic configured: give --topic TOPIC or 'topics' in the config")
        self.cfg = cfg
        self.store = Store(cfg.paths.db)
        self.transports: list[Transport] = []
        self.client_id = ""
        self._notifier: Notifier | None = None
        self._show_failures = 0
        self._show_failed_at = -60.0
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._new = asyncio.Event()
        self._outbox_wake = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._state_changed = asyncio.Event()
        self._receipts: str | None = None
        self.last_message_id: str | None = None
        self.handed_over = 0
        self._queued: deque[list[Stored]] = deque()
        self._shown_seq = 0
        self._events: list[tuple[str, str, float]] = []
        self._e2e = Decryptor(cfg)
        self.downloads: Downloader | None = None
        self.realert: ReAlerter | None = None
        self._urgent_ack = any(r.ack_urgent for r in cfg.rules)
        self.screen = ScreenSync(self._write_lock)
        self._state_prefix = state_prefix(cfg)

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        await asyncio.to_thread(self.store.open)
        try:
            # the keyring only for topics with keys; a key file others can read: exit 2
            await asyncio.to_thread(lambda: self._e2e.load(strict=True))
            self.client_id = client_id(self.cfg, self.store)
            self._receipts = receipt_destination(self.cfg, self.store)
            self.transports = make_transports(self.cfg, self.client_id)
            self._notifier = make_notifier(self.cfg, self._on_event, self.store)
            await self._notifier.__aenter__()
            self.downloads = self._downloader(self._notifier)
            await self.downloads.__aenter__()
        except BaseException:
            if self._notifier is not None:
                await self._notifier.__aexit__(None, None, None)
            self.store.close()
            raise
        last = await asyncio.to_thread(self.store.last_message)
        self.last_message_id = last.message.id if last else None
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._spawn(self._hand_off())
        self._spawn(self._prune())
        self._spawn(self._status())
        self._spawn(self._rekeyed())
        self.realert = realerter(
            self.cfg, self.store, self._notifier, self.transports, self.screen.note
        )
        self._spawn(self.realert.run())
        self._spawn(self.screen.run(self._notifier))
        if self._receipts is not None:
            self._spawn(self._drain_outbox())
        for transport in self.transports:
            if hasattr(transport, "on_state"):  # optional: state changes wake the status file
                transport.on_state = self._on_state
            self._spawn(transport.run(self._sink))
        log.info("agent %s started: %s", self.client_id, ", ".join(t.url for t in self.transports))
        return self

    def _spawn(self, coro: Any) -> None:
        assert self._tg is not None
        self._tasks.append(self._tg.create_task(coro))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        try:
            if self._tg is not None:
                await self._tg.__aexit__(None, None, None)
        finally:
            if self.downloads is not None:
                await self.downloads.__aexit__(None, None, None)
            if self._notifier is not None:
                await self._notifier.__aexit__(None, None, None)
            self._write_status("offline")
            self.store.close()

    # --- ingest -----------------------------------------------------------------------------

    async def _sink(self, batch: Batch) -> None:
        """Commit one batch (messages, cursor, delivered receipts, rejected payloads) in one
        transaction; a batch of only rejected payloads is committed too, before its ack."""
        if not batch.messages and not batch.rejected and not batch.states:
            return
        async with self._write_lock:
            try:
                fresh, handled = await asyncio.to_thread(self._commit, batch)
            except StoreError as exc:  # StoreBusy too: the transport retries, status says why
                self._store_health(str(exc))
                raise
            self._store_health(None)
            if fresh:  # queued under the lock: the queue's order is the commit order
                self._queued.append(fresh)
            if handled:  # before the hand-off can see them: it skips these
                self.screen.note(handled)
        if encrypted_fresh := [s for s in fresh if s.state != "received"]:
            self._e2e.note(encrypted_fresh)
        if batch.messages:
            self.last_message_id = batch.messages[-1].id
        if fresh:
            self._new.set()
            self._outbox_wake.set()
            if self.downloads is not None:  # after the hand-off is queued: never before it
                self.downloads.submit(fresh)
            if self.realert is not None and any(ackcore.required(s.message) for s in fresh):
                self.realert.wake()  # the store's trigger scheduled it (agent.realert)

    def _downloader(self, notifier: Notifier) -> Downloader:
        from agent import secrets
        from agent.transports import tls_context

        cfg = self.cfg
        backend = getattr(notifier, "backend", notifier)  # behind the rules layer, if any
        ready = getattr(backend, "attachment_ready", None)  # optional: desktop shows images
        return Downloader(
            cfg,
            self.store,
            token_for=lambda server: secrets.token_for(cfg, server),
            on_file=ready,
            context=lambda: tls_context(cfg.tls),
        )

    def _commit(self, batch: Batch) -> tuple[list[Stored], list[Stored]]:
        """Decrypt (agent.e2e), store, then apply the synced states (agent.statesync), in a
        worker thread: the new messages, and those another device handled."""
        fresh: list[Stored] = []
        if batch.messages or batch.rejected:
            messages, encrypted = self._e2e.open_batch(batch.messages)
            if self._urgent_ack:  # [[rules]] ack_urgent: priority 5 there must be acknowledged
                messages = [ackcore.stamp(m, self.cfg.rules) for m in messages]
            fresh = self.store.insert_batch(
                messages, source=batch.source, cursor=batch.cursor,
                receipt_destination=self._receipts, device=self.client_id,
                device_name=self.cfg.device_name, redelivery=batch.redelivery,
                rejected=batch.rejected, cursor_id=batch.last_id, encrypted=encrypted,
            )  # fmt: skip
        if not batch.states:
            return fresh, []
        return fresh, self.store.apply_remote_states(batch.states, own_device=self.client_id)

    async def _hand_off(self) -> None:
        """Hand stored messages to the notifier, oldest first, each once.

        First whatever the store holds above the mark (an earlier run's leftovers and anything
        committed meanwhile), then the batches the sink queued in memory in commit order —
        skipping seqs already shown, so the two sources never show a message twice.
        """
        while True:
            items = await asyncio.to_thread(self.store.pending_notifications, 1000)
            if not items:
                break
            await self._show(items)
        while True:
            await self._new.wait()
            self._new.clear()
            while self._queued:
                batch = [s for s in self._queued.popleft() if s.seq > self._shown_seq]
                if batch:
                    await self._show(batch)

    async def _show(self, items: Sequence[Stored]) -> None:
        notifier = self._notifier
        assert notifier is not None
        step = notifier.hand_off_size or len(items)
        async with self._write_lock:
            for start in range(0, len(items), step):
                part = items[start : start + step]
                # Superseded or closed members of a notification sequence are not shown (a
                # restart's backlog of message, update, clear shows nothing); still marked.
                live = [s for s in part if not self.screen.handled(s)]  # read elsewhere
                if any(s.message.extra and "sequence_id" in s.message.extra for s in live):
                    live = await asyncio.to_thread(self.store.current, live)
                if live:
                    await self._show_guarded(notifier, live)
                # No await between show() and the mark, and the mark takes no lock
                # (agent.handoff): a crash repeats at most this one slice.
                self.store.mark_notified(part[-1].seq)
                self._shown_seq = part[-1].seq
                self.handed_over += len(part)

    async def _show_guarded(self, notifier: Notifier, items: Sequence[Stored]) -> None:
        """``notifier.show(items)``; a failure in it is logged, never the agent's end.

        Let out, it ended the hand-off and so the agent, and the same messages, never marked
        handed over, ended it again at every start: a crash loop on one message (an icon URL
        the desktop backend could not parse did it; ``--notifier log`` on a full disk does).
        The messages stay stored, in ``pushagent history`` as ``received``, not displayed;
        they are marked handed over like shown ones, so the next start goes on from there.
        """
        try:
            await notifier.show(items)
        except Exception as exc:  # any notifier's bug, logged with its reason
            self._show_failures += 1
            now = time.monotonic()
            if now - self._show_failed_at >= 60.0:  # at most a line a minute, with a count
                self._show_failed_at = now
                log.error("the notifier failed on %d message(s) (%s…): %s; they are in "
                          "'pushagent history', not shown (%d failure(s) so far)", len(items),
                          items[0].message.id, exc, self._show_failures,
                          exc_info=not isinstance(exc, OSError))  # fmt: skip

    async def _rekeyed(self) -> None:
        """A key imported while running (agent.e2e.receive): show what it made readable."""
        self._e2e.note(await asyncio.to_thread(lambda: [s for s, _ in self.store.undecryptable()]))
        while True:
            await asyncio.sleep(REKEY_EVERY)
            if not self._e2e.pending or not self._e2e.changed():
                continue
            async with self._write_lock:
                items = await asyncio.to_thread(self._e2e.reopened, self.store)
                if items and self._notifier is not None:  # shown again, now with their text
                    await self._show_guarded(self._notifier, items)
                if items and self.downloads is not None:
                    self.downloads.submit(items)  # an encrypted file can be opened now

    # --- receipts -------------------------------------------------------------------------

    def _on_event(self, message_id: str, state: str) -> None:
        """A notifier reported what the user did; record it and queue the receipt."""
        if threading.get_ident() == self._loop_thread:
            # Not call_soon_threadsafe from the loop's own thread: each call writes a byte to
            # the loop's self-pipe, which is also the signal wakeup fd. The log notifier's
            # event per message filled it during a drain and a SIGTERM arriving then was lost
            # (tests/test_mqtt_brokers_faults.py under load: "Exception ignored when trying
            # to write to the signal wakeup fd"); and those 64 syscalls sat between show()
            # and the hand-off mark, widening the window in which a SIGKILL repeats a slice
            # (tests/test_ws_relay.py). call_soon runs it after the mark, with no syscall.
            self._loop.call_soon(self._note_event, message_id, state, time.time())
            return
        # Backends may call this from their own thread: hop onto the loop first.
        self._loop.call_soon_threadsafe(self._note_event, message_id, state, time.time())

    def _note_event(self, message_id: str, state: str, when: float) -> None:
        # Events reported together (the log notifier's slice of 64) are recorded by one task
        # in one transaction, not a task and a commit each.
        self._events.append((message_id, state, when))
        if len(self._events) == 1:
            self._spawn(self._record())

    async def _record(self) -> None:
        events, self._events = self._events, []
        try:
            await asyncio.to_thread(
                self.store.record_states, events, receipt_destination=self._receipts,
                device=self.client_id, device_name=self.cfg.device_name,
                state_prefix=self._state_prefix,
            )  # fmt: skip
        except EdgepushError as exc:
            log.warning("could not record %d events (%s ...): %s", len(events), events[0], exc)
            return
        self._outbox_wake.set()
        if self.realert is not None and (acked := [e[0] for e in events if e[1] == ACKED]):
            await self.realert.acknowledged(acked)  # a re-alert shown meanwhile goes too

    async def _drain_outbox(self) -> None:
        transport = self.transports[0]
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):  # not wait_for: see _status
                    await self._outbox_wake.wait()
            self._outbox_wake.clear()
            while transport.state == "connected":
                items = await asyncio.to_thread(self.store.outbox_peek, OUTBOX_BATCH)
                if not items:
                    break
                results = await asyncio.gather(
                    *(transport.publish(i) for i in items), return_exceptions=True
                )
                done = [i.seq for i, r in zip(items, results, strict=True) if r is None]
                if done:
                    await asyncio.to_thread(self.store.outbox_done, done)
                errors = [r for r in results if isinstance(r, BaseException)]
                if errors:
                    if not isinstance(errors[0], ConnectionLost):
                        log.warning("receipts not accepted: %s", errors[0])
                    break  # try again on the next wake-up or after 2 s

    # --- housekeeping ---------------------------------------------------------------------

    async def _prune(self) -> None:
        days = self.cfg.store.max_age_days
        while True:
            try:
                gone = await asyncio.to_thread(
                    self.store.prune,
                    max_age=days * 86400,
                    max_messages=self.cfg.store.max_messages,
                )
                if gone:
                    log.info("retention: removed %d old messages", gone)
                if self.downloads is not None:
                    files = await self.downloads.sweep()
                    if files:
                        log.info("retention: removed %d attachment files", files)
            except (EdgepushError, OSError) as exc:
                log.warning("retention pruning failed: %s", exc)
            await asyncio.sleep(PRUNE_EVERY)

    def state(self) -> str:
        """connected if any server is, else connecting (or offline before the first try)."""
        states = {t.state for t in self.transports}
        for s in ("connected", "connecting"):
            if s in states:
                return s
        return "offline"

    async def _status(self) -> None:
        shown: tuple[str, str | None, tuple[str | None, float | None]] | None = None
        while True:
            now = (self.state(), self.last_message_id, self._why())
            if now != shown:
                if shown is None or now[0] != shown[0]:
                    self._since = time.time()
                self._write_status(now[0])
                shown = now
            with contextlib.suppress(TimeoutError):
                # A state change wakes us at once; the last message id, every second. Not
                # wait_for: on 3.11 it can swallow a cancel that races the event being set
                # (the transport sets it while shutting down), and the TaskGroup never exits.
                async with asyncio.timeout(1.0):
                    await self._state_changed.wait()
            self._state_changed.clear()

    def _why(self) -> tuple[str | None, float | None]:
        """The last connection error and the seconds until the next try, of the first server
        not connected (None, None when all are): ``status`` shows them."""
        for t in self.transports:
            if t.state != "connected":
                return getattr(t, "last_error", None), getattr(t, "retry_in", None)
        return None, None

    def _on_state(self, _state: str) -> None:
        # Written at once (not on the next tick) so a quick drop-and-reconnect still shows.
        self._since = time.time()
        self._write_status(self.state())
        self._state_changed.set()
        if self.realert is not None and self.state() == "connected":
            self.realert.online()

    _since: float = 0.0
    _store: str = health.OK
    _store_error: str | None = None
    _store_since: float | None = None

    def _store_health(self, error: str | None) -> None:
        """Record the last commit's outcome; the status file is rewritten when the word changes
        (``agent.health``: a disk-full agent must not look merely ``connected``)."""
        word = health.OK if error is None else health.store_problem(error)
        if word == self._store:
            return
        self._store, self._store_error = word, error
        self._store_since = None if error is None else time.time()
        if error is None:
            log.info("store: commits work again")
        self._write_status(self.state())

    _loop: asyncio.AbstractEventLoop
    _loop_thread: int

    def _write_status(self, state: str) -> None:
        """Write the status file atomically (``pushagent status`` reads it)."""
        path = self.cfg.paths.status_file
        body = {
            "server": ", ".join(t.url for t in self.transports),
            "state": state,
            "since": self._since or time.time(),
            "last_message_id": self.last_message_id,
            "pid": os.getpid(),
            "client_id": self.client_id,
            "store": self._store,
            "store_error": self._store_error,
            "store_since": self._store_since,
        }
        body["last_error"], body["retry_in"] = self._why()
        try:
            write_private(path, (json.dumps(body) + "\n").encode())
        except OSError as exc:
            log.warning("cannot write the status file %s: %s", path, exc.strerror)
