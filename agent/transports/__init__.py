"""Transports: one live connection to a server, delivering batches of messages.

The contract every transport keeps (it is what makes "nothing lost, nothing twice" hold):

1. ``run(sink)`` connects, receives, and for each group of messages that arrived together
   awaits ``sink(batch)``. Only after ``sink`` returned does it acknowledge them (MQTT:
   PUBACKs in receive order; ntfy streams: nothing to send, the cursor went into the same
   transaction as the messages). If ``sink`` raises StoreBusy, the transport keeps the batch,
   waits, and calls ``sink`` again with it; it never acks an uncommitted message.
   An id-less MQTT message is listed in ``batch.redelivery`` (its packet id, DUP flag and a
   digest of topic and payload), which the sink passes to ``Store.insert_batch`` so that the
   broker resending it after a crash between commit and PUBACK is recognised as stored.
2. A payload that cannot be decoded is logged with the reason (rate-limited: ``RejectLog``)
   and listed in ``batch.rejected`` as a ``Rejected`` (its first 4096 bytes, the reason, the
   topic); the sink stores those in the batch's transaction (``Store.insert_batch(rejected=)``)
   and the transport acknowledges them with the batch, so one never stalls the ones behind.
   A batch may hold only rejected payloads; the sink must still commit it before the ack.
3. A connection's tasks (reader, committer, watchdog) are owned together
   (``agent.tasks.supervise``): one that fails ends the session with the failure logged at
   ERROR, and the transport reconnects with backoff, as for a dropped link. Nothing is acked
   that was not committed, so the server resends whatever the failed session left.
   On a dropped or dead link, ``run`` reconnects by itself with ``agent.backoff`` and keeps
   ``state`` current. It returns only when cancelled; an AuthError or ConfigError that a
   person must fix is raised out of ``run`` when ``fatal_auth`` is set (``pushagent
   send``), and a ServerRefused (the server's answer cannot change by retrying) when the
   transport was never connected in this run (``agent.transports.refusal``: ``pushagent
   run`` exits 2 with it). Otherwise the resident agent keeps retrying at the backoff cap,
   saying why each time, with ``last_error`` and ``retry_in`` for ``pushagent status``.
4. ``publish(item)`` sends one outbox item (a receipt, or a message published while
   offline) and returns once the server acknowledged it; it raises ConnectionLost when
   there is no connection, and the item stays in the outbox.

Only ``agent.transports.mqtt`` imports paho; only ``agent.transports.ws`` imports websockets.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from agent.backoff import backoff
from agent.config import TlsConfig
from agent.envelope import Message
from agent.errors import ConfigError, StoreBusy
from agent.states import StateEvent
from agent.store import OutboxItem, Redelivery, Rejected

if TYPE_CHECKING:
    from agent.e2e.seal import Arrived

log = logging.getLogger("pushagent.transport")

ConnState = Literal["connected", "connecting", "offline"]


@dataclass
class Batch:
    """Messages that arrived together from one source, to be committed in one transaction."""

    source: str
    messages: list[Message | Arrived] = field(default_factory=list)
    """In arrival order; ``Arrived`` (a sealed message not yet opened) only from a transport
    made with ``sealed_arrivals`` (the agent's: its sink opens them, agent.e2e.receive)."""
    cursor: tuple[str, str] | None = None
    """``(source, subscription)`` whose position is the last message id of this batch."""
    rejected: list[Rejected] = field(default_factory=list)
    """Payloads that could not be stored as envelopes: kept raw with the batch, then acked."""
    last_id: str | None = None
    """The cursor position when it is not the last message's id (a rejected frame's id)."""
    redelivery: dict[str, Redelivery] = field(default_factory=dict)
    """Message id -> where that id-less message came from (see ``Store.insert_batch``)."""
    states: list[StateEvent] = field(default_factory=list)
    """Synced states from the user's other devices (agent.states), applied with the batch."""


BatchSink = Callable[[Batch], Awaitable[None]]


class Transport(Protocol):
    url: str
    """The server, as the user wrote it, without credentials."""
    state: ConnState

    async def run(self, sink: BatchSink) -> None: ...

    async def publish(self, item: OutboxItem) -> None: ...


def destinations(items: Sequence[OutboxItem]) -> set[str]:
    """The distinct destinations of outbox items (for logging and batching)."""
    return {i.destination for i in items}


async def commit(batch: Batch, sink: BatchSink) -> None:
    """Await ``sink(batch)`` until it has committed (rule 1 of the contract above).

    StoreBusy (the database locked, the disk full) means: wait and offer the same batch again.
    Nothing is acknowledged meanwhile, so the server keeps every message of it.
    """
    delays = backoff(initial=0.2, cap=5.0)
    while True:
        try:
            await sink(batch)
            return
        except StoreBusy as exc:
            delay = next(delays)
            log.warning("store busy (%s); retrying the batch in %.1f s", exc, delay)
            await asyncio.sleep(delay)


class RejectLog:
    """Rejections logged at WARNING, at most ``burst`` a minute: a flood of hostile payloads
    must not become a flood of log lines (they are all in the store's ``rejected`` table)."""

    def __init__(self, logger: logging.Logger, burst: int = 10, window: float = 60.0) -> None:
        self.log = logger
        self.burst = burst
        self.window = window
        self._start = -window
        self._shown = 0
        self._hidden = 0

    def note(self, where: str, item: Rejected) -> None:
        now = time.monotonic()
        if now - self._start >= self.window:
            if self._hidden:
                self.log.warning("%s: %d more rejected payloads not logged", where, self._hidden)
            self._start, self._shown, self._hidden = now, 0, 0
        if self._shown < self.burst:
            self._shown += 1
            self.log.warning(
                "%s: rejected a message on %r (%d bytes): %s (kept in 'pushagent history "
                "--rejected', acked)", where, item.topic, item.size, item.reason,
            )  # fmt: skip
        else:
            self._hidden += 1


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """The TLS context for mqtts:// and https:// servers: the system CAs unless ``ca_file``,
    a client certificate if configured; ``insecure`` turns verification off (the transport
    logs a warning on each connect)."""
    try:
        ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
        if tls.cert_file:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls: cannot load certificates: {exc}") from None
    if tls.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
