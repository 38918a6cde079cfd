"""MQTT transport: a persistent MQTT 5 (or 3.1.1) session over paho (with ``paho_conn``, the
only paho importers).

Theory of operation
-------------------
paho runs on the asyncio loop, not in a thread of its own: after the blocking connect (a
worker thread), the socket is watched with ``add_reader``/``add_writer`` (paho's external
loop API: ``loop_read``, ``loop_write``, ``loop_misc``, ``on_socket_register_write``), so
paho's callbacks run on the loop and there is no second thread contending for the GIL or
waking the loop per burst (measured: docs/PERFORMANCE.md). Each readable event reads up to a
burst of packets and queues their messages as one event. ``_serve`` takes whatever messages
arrived (up to ``mqtt.max_batch``), decodes them (``mqtt_batch``), awaits the sink (one
transaction, in a worker thread, while the loop keeps reading) and only then sends the
PUBACKs, in receive order (``manual_ack=True``). A message that cannot be decoded is logged
(rate-limited), kept raw in ``batch.rejected`` (stored in the batch's transaction) and acked
with its batch, so it never stalls the others.

The session's tasks are owned together (``agent.tasks.supervise``): the committer (``_receive``),
the watchdog, and the reader (paho on ``add_reader``: a failure there arrives as a ``crash``
event). Whichever fails ends the session with the failure logged at ERROR and a reconnect
with backoff; nothing uncommitted was acked, so the broker resends it.

The session is persistent (clean start off, a session expiry), so what arrives while the
agent is down, or was received but not acked before a crash, is redelivered by the broker;
the store's UNIQUE id makes the redelivery a no-op. A message without an id of its own
(plain text) is given one at decode; its packet id and a digest of topic and payload go into
the batch (``batch.redelivery``; ``mqtt_batch``) and are recorded with it, so a resend (DUP
set) after a crash between commit and PUBACK gets the same id back (``Store.insert_batch``
lists the corner cases).
A resend, on the same link, of one not yet acked is dropped unacked (``mqtt_redelivery.InFlight``).
A retained message sent again at each reconnect's SUBSCRIBE is recognised the same way, by its
topic, bytes and broker session (``agent.store.retained``).

Dead links: paho pings after ``keepalive`` seconds without traffic (the watchdog calls its
``loop_misc`` every tick) but only gives up a whole keepalive later. The watchdog notes when
bytes last arrived and, after ``keepalive + max(keepalive/4, 2 s)`` of silence, shuts the
socket down, so a stalled link is replaced within about 1.5 keepalives.

Which protocol (MQTT 5 or 3.1.1; ``[mqtt] protocol = "auto"`` tries 5, then 3.1.1, and remembers
the answer per server) is ``agent.transports.mqtt_protocol``'s business; ``open`` asks it.
The attempt itself (paho ``Client``, CONNECT, SUBSCRIBEs) is in ``agent.transports.mqtt_subscribe``.

One paho ``Client`` per connection attempt: no PUBACK for an old link's packet id on a new one.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from agent.backoff import backoff
from agent.config import AgentConfig
from agent.errors import (
    AuthError,
    ConfigError,
    ConnectionLost,
    InvalidState,
    TransportError,
)
from agent.store import OutboxItem
from agent.tasks import supervise
from agent.transports import BatchSink, ConnState, RejectLog, commit, mqtt_codec
from agent.transports import mqtt_protocol as proto
from agent.transports.mqtt_batch import to_batch
from agent.transports.mqtt_redelivery import RedeliveryTrust
from agent.transports.mqtt_session import SessionToken
from agent.transports.mqtt_subscribe import connect, make_client, subscribe
from agent.transports.mqtt_url import MqttUrl, parse_url
from agent.transports.paho_conn import PahoConn, Received
from agent.transports.refusal import must_stop, stopped

log = logging.getLogger("pushagent.mqtt")
__all__ = ["MqttTransport", "MqttUrl", "parse_url"]

BACKOFF_CAP = 60.0


class MqttTransport:
    """A resident MQTT session delivering batches to a sink (see ``agent.transports``).

    ``persistent=False`` (``pushagent send``) uses clean start and no session expiry, so a
    one-off publisher never takes over or leaves behind a session.
    """

    def __init__(
        self,
        url: str,
        cfg: AgentConfig,
        *,
        topics: tuple[str, ...] = (),
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        persistent: bool = True,
        fatal_auth: bool = False,
        protocol_key: str = proto.AGENT_KEY,
        state_prefix: str | None = None,
        sealed_arrivals: bool = False,
    ) -> None:
        self.parsed = parse_url(url)
        self.url = self.parsed.display
        self.cfg = cfg
        self.state_prefix = state_prefix
        """State sync: ``<state_prefix>/<topic>`` for each topic is subscribed too, and what
        arrives there is a synced state (agent.states), never a message."""
        self.sealed_arrivals = sealed_arrivals
        """A sealed message (agent.e2e) goes into the batch as ``Arrived``, not decoded (the
        agent's: its sink opens it into one Message, not an outer one too; agent.e2e.seal)."""
        self.topics = topics + tuple(f"{state_prefix}/{t}" for t in topics if state_prefix)
        self.client_id = client_id or f"pushagent-{uuid.uuid4().hex[:12]}"
        self._password = self.parsed.password or password
        self._username = self.parsed.username or username or cfg.auth.username
        self.persistent = persistent
        self.fatal_auth = fatal_auth
        self.state: ConnState = "offline"
        self.on_state: Callable[[ConnState], None] | None = None
        self._conn: PahoConn | None = None
        self._rejects = RejectLog(log)
        self.keep_retrying = False
        self.last_error: str | None = None
        self.retry_in: float | None = None
        self.protocol_key = protocol_key
        """The config key that sets the protocol, named in errors (the relay's differs)."""
        self.protocol = "3.1.1" if cfg.mqtt.protocol == "3.1.1" else "5"
        """The protocol of the current (or last) connection attempt."""
        self._answered: str | None = None  # ... once its CONNACK accepted it
        self._session: str | None = None
        """The broker session's token (``mqtt_session``; agent.store.retained)."""
        self.tokens = (
            SessionToken(cfg.paths.data_dir, self.client_id, cfg.mqtt.qos)
            if persistent and self.topics else None
        )  # fmt: skip
        self.memory = proto.ProtocolMemory(cfg.paths.data_dir)
        known = self.memory.get(self.url)
        self.trust = RedeliveryTrust(
            cfg.mqtt.redelivery, self.url, known_untrusted=known.untrusted if known else None,
            on_untrusted=lambda why: self.memory.mark_untrusted(self.url, why),
        )  # fmt: skip
        """Whether packet id + DUP may dedupe id-less messages (``[mqtt] redelivery``)."""

    def _set_state(self, state: ConnState) -> None:
        if state == "connected":  # for status and agent.transports.refusal
            self.keep_retrying, self.retry_in = True, None
        if state != self.state:
            self.state = state
            if self.on_state is not None:
                self.on_state(state)

    # --- the resident loop ------------------------------------------------------------------

    async def run(self, sink: BatchSink) -> None:
        """Connect, deliver batches to ``sink``, reconnect with backoff, until cancelled."""
        delays = backoff(cap=BACKOFF_CAP)
        crashed = False
        try:
            while True:
                self._set_state("connecting")
                started = time.monotonic()
                try:
                    conn = await self.open(sink=sink)
                except (AuthError, ConfigError) as exc:
                    if must_stop(exc, fatal=self.fatal_auth, keep_retrying=self.keep_retrying):
                        raise stopped(self.url, exc) from None
                    delay = BACKOFF_CAP
                    self.last_error, self.retry_in = str(exc), delay
                    log.error("%s: %s; retrying in %.0f s", self.url, exc, delay)
                except TransportError as exc:
                    delay = proto.retry_delay(exc, next(delays), time.monotonic() - started)
                    self.last_error, self.retry_in = str(exc), delay
                    log.warning("%s: %s; retrying in %.1f s", self.url, exc, delay)
                except InvalidState as exc:  # the committer, while the SUBSCRIBEs went on
                    crashed, delay = True, next(delays)
                    self.last_error, self.retry_in = str(exc), delay
                    log.error("%s: session failed: %s", self.url, exc, exc_info=exc)
                else:
                    if not crashed:  # a good connect resets the backoff; a crash loop does not
                        delays = backoff(cap=BACKOFF_CAP)
                    crashed = False
                    try:
                        why = await self._serve(conn, sink)
                    except TransportError as exc:
                        why = str(exc)
                    except InvalidState as exc:
                        crashed = True
                        why = str(exc)
                        log.error("%s: session failed: %s", self.url, exc, exc_info=exc)
                    finally:
                        await self._close(conn)
                    delay = next(delays)
                    self.last_error, self.retry_in = why, delay
                    log.warning(
                        "%s: connection lost (%s); reconnecting in %.1f s", self.url, why, delay
                    )
                self._set_state("connecting")
                await asyncio.sleep(delay)
        finally:
            self._set_state("offline")

    async def open(self, *, probe: bool = False, sink: BatchSink | None = None) -> PahoConn:
        """Connect in the protocol ``[mqtt] protocol`` allows (``mqtt_protocol.negotiate``;
        ``probe`` ignores the remembered one). Raises our errors. With ``sink``, what arrives
        while the SUBSCRIBEs go on is committed to it as it comes (``_subscribe``)."""
        conn, _ = await proto.negotiate(
            lambda protocol: self._open(protocol, sink), setting=self.cfg.mqtt.protocol,
            server=self.url, memory=self.memory, key=self.protocol_key, probe=probe,
            answered=lambda: self._answered,
        )  # fmt: skip
        return conn

    async def _open(self, protocol: str, sink: BatchSink | None = None) -> PahoConn:
        """One connection attempt: TCP (+TLS), CONNECT, CONNACK, SUBSCRIBE. Raises our errors."""
        self.protocol = protocol
        self._answered = None
        loop = asyncio.get_running_loop()
        client = make_client(self)
        conn = PahoConn(client, loop)
        self._wire(conn)
        timeout = self.cfg.mqtt.connect_timeout
        try:
            async with asyncio.timeout(timeout):  # not wait_for: it can swallow a cancel (3.11)
                await asyncio.to_thread(connect, self, client)
        except TimeoutError:
            raise ConnectionLost(f"no answer within {timeout:.0f} s") from None
        try:
            sock = client.socket()
            if isinstance(sock, socket.socket):
                # paho leaves Nagle on: every PUBACK would wait ~40 ms for the delayed ACK.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.attach()
            try:
                async with asyncio.timeout(timeout):
                    code, present = await conn.connack
            except TimeoutError:
                raise proto.silent(protocol, timeout) from None
            proto.check_connack(code, protocol)
            proto.refused(code)
            self.trust.connected(protocol, present)
            if self.tokens is not None:  # agent.store.retained: which broker session
                self._session = self.tokens.settle(resumed=present)
            self._answered = protocol
            if self.topics:
                await self._subscribe(conn, timeout, sink)
        except BaseException as exc:
            await self._close(conn)
            if isinstance(exc, TimeoutError):
                raise ConnectionLost(f"no CONNACK/SUBACK within {timeout:.0f} s") from None
            raise
        if self.parsed.tls and self.cfg.tls.insecure:
            log.warning("%s: TLS certificate checks are OFF (tls.insecure = true)", self.url)
        log.info(
            "%s: connected as %s with MQTT %s (session %s)",
            self.url,
            self.client_id,
            protocol,
            "resumed" if present else "new",
        )
        self._conn = conn
        self._set_state("connected")
        return conn

    async def _subscribe(self, conn: PahoConn, timeout: float, sink: BatchSink | None) -> None:
        """The SUBSCRIBEs (``mqtt_subscribe.subscribe``), with the committer running beside
        them when there is a ``sink``.

        A refused SUBSCRIBE is sent again on this connection for up to ~15 s while the filters
        granted already deliver (and a resumed session its queue). Held until the SUBSCRIBEs
        were done, those messages went with the connection when the retries ran out: lost
        for good at QoS 0, and at QoS 1 resent into the next connection's same fate, so
        nothing was stored while a refusal lasted. Now they are committed (and acked) as they
        come. When the SUBSCRIBEs end, a ``pause`` event goes behind what has been read; the
        committer commits everything before it and stops, and what follows is ``_serve``'s.
        A failure stops the reading first, so nothing read is left behind with the link."""
        if sink is None:  # pushagent status --probe: nothing is delivered
            await subscribe(self, conn, timeout)
            return
        failed: list[BaseException] = []

        async def subscriber() -> None:
            try:
                await subscribe(self, conn, timeout)
            except Exception as exc:  # noqa: BLE001 - raised below, once the committer is done
                conn.detach()
                failed.append(exc)
            finally:
                conn.events.put_nowait(("pause", None))

        why = await supervise(self._receive(conn, sink), subscriber=subscriber())
        if failed:
            raise failed[0]
        if why is not None:  # the link was lost while subscribing
            raise proto.link_closed(why)

    async def close(self) -> None:
        """Disconnect the current connection, if any (``pushagent send``)."""
        if self._conn is not None:
            await self._close(self._conn)
        self._set_state("offline")

    async def _close(self, conn: PahoConn) -> None:
        if self._conn is conn:
            self._conn = None
        conn.lost = True
        conn.fail_waiters("connection closed")
        conn.shutdown()

    # --- paho's callbacks (on the loop, inside loop_read/loop_write) -------------------------

    def _wire(self, conn: PahoConn) -> None:
        def on_connect(c: Any, u: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
            conn.packets += 1
            _resolve(conn.connack, (rc, bool(flags.session_present)))

        def on_subscribe(c: Any, u: Any, mid: int, codes: list[ReasonCode], props: Any) -> None:
            conn.packets += 1
            conn.subacks += 1
            _resolve(conn.suback, codes)

        def on_message(c: Any, u: Any, msg: paho.MQTTMessage) -> None:
            conn.packets += 1
            try:
                topic: str | None = msg.topic
            except UnicodeDecodeError:  # raised here, not in paho: it must not end the read
                topic = None
            payload = bytes(msg.payload)
            if conn.inflight.resend(msg.mid, msg.qos, msg.dup, topic, payload):
                return  # the broker resent one not yet acked: its PUBACK will cover both
            # Handed on once per read burst (PahoConn._readable).
            conn.inbox.append((msg.mid, msg.qos, msg.dup, msg.retain, topic, payload))

        def on_publish(c: Any, u: Any, mid: int, rc: ReasonCode, props: Any) -> None:
            conn.packets += 1
            self._published(conn, mid, rc)

        def on_disconnect(c: Any, u: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
            conn.closed = str(rc)
            suback = conn.suback if self.topics else None  # closed right after CONNECT/SUBSCRIBE
            proto.closed_early(conn.connack, suback, self.protocol, rc, subscribed=conn.subacks > 0)
            conn.events.put_nowait(("lost", str(rc)))

        client = conn.client
        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.on_publish = on_publish
        client.on_disconnect = on_disconnect

    def _published(self, conn: PahoConn, mid: int, rc: ReasonCode) -> None:
        fut = conn.waiters.pop(mid, None)
        if fut is None or fut.done():
            return
        if rc.is_failure:
            fut.set_exception(AuthError(f"broker refused the publish: {rc}"))
        else:
            fut.set_result(None)

    # --- receiving ------------------------------------------------------------------------

    async def _serve(self, conn: PahoConn, sink: BatchSink) -> str:
        """Deliver batches until the connection is lost; return why it was lost. A failed
        task (committer, watchdog, reader) raises: InvalidState for a bug, ours otherwise."""
        try:
            why = await supervise(self._receive(conn, sink), watchdog=self._watchdog(conn))
        finally:
            conn.fail_waiters("connection lost")
        if why is None:
            raise InvalidState("a SUBSCRIBE's pause event after the SUBSCRIBEs")
        return why

    async def _receive(self, conn: PahoConn, sink: BatchSink) -> str | None:
        """Commit what arrives until the link is lost (return why) or a ``pause`` event
        (return None; ``_subscribe``), everything queued before either committed first."""
        limit = self.cfg.mqtt.max_batch
        pending: list[Received] = []  # received, not yet in a batch (receive order)
        end: tuple[str, Any] | None = None  # ("lost", why) or ("pause", None), once read
        while True:
            if not pending:
                kind, item = await conn.events.get()
                if kind in _ENDS:
                    return None if kind == "pause" else str(item)
                pending.extend(_received(kind, item))
            # Group commit: everything that has arrived by now, up to the bound.
            while len(pending) < limit and end is None and not conn.events.empty():
                kind, item = conn.events.get_nowait()
                if kind in _ENDS:
                    end = (kind, item)
                else:
                    pending.extend(_received(kind, item))
            batch, pending = pending[:limit], pending[limit:]
            await self._deliver(conn, batch, sink)
            if end is not None and not pending:
                return None if end[0] == "pause" else str(end[1])

    async def _deliver(self, conn: PahoConn, msgs: list[Received], sink: BatchSink) -> None:
        batch, dups = to_batch(
            msgs, source=self.url, max_size=self.cfg.max_message_size,
            state_prefix=self.state_prefix, trust=self.trust, session=self._session,
            rejects=self._rejects, sealed_arrivals=self.sealed_arrivals,
        )  # fmt: skip
        if dups:
            log.info("%s: %d of %d messages are resends (DUP)", self.url, dups, len(msgs))
        if dropped := conn.inflight.take_dropped():  # read since the last batch
            log.info("%s: %d resends of messages in flight dropped", self.url, dropped)
        await commit(batch, sink)  # nothing is acked until then: the broker keeps them
        for mid, qos, _, _, _, _ in msgs:  # receive order, after the commit
            if qos > 0:
                conn.client.ack(mid, qos)
                conn.inflight.acked(mid)
        conn.flush()

    async def _watchdog(self, conn: PahoConn) -> None:
        keepalive = self.cfg.mqtt.keepalive
        limit = keepalive + max(keepalive / 4, 2.0)
        while True:
            await asyncio.sleep(min(1.0, keepalive / 10))
            conn.client.loop_misc()  # paho's keepalive: PINGREQ when due
            silent = time.monotonic() - conn.last_in
            if silent > limit:
                log.warning(
                    "%s: nothing from the broker for %.1f s; dropping the link", self.url, silent
                )
                conn.kill()
                conn.events.put_nowait(("lost", f"no reply within {limit:.1f} s"))
                return

    # --- publishing -----------------------------------------------------------------------

    async def publish(self, item: OutboxItem) -> None:
        """Publish one outbox item with QoS 1; return after the broker's PUBACK."""
        await self.publish_raw(item.destination, item.payload.encode())

    async def publish_raw(self, topic: str, payload: bytes, timeout: float | None = None) -> None:
        """Publish ``payload`` to ``topic`` with QoS 1 and wait for the PUBACK."""
        conn = self._conn
        if conn is None or conn.lost:
            raise ConnectionLost(f"{self.url}: not connected")
        fut: asyncio.Future[None] = conn.loop.create_future()
        payload = mqtt_codec.pack(payload, self.cfg.mqtt.compress)
        props = mqtt_codec.properties(payload) if self.protocol == "5" else None
        info = conn.client.publish(topic, payload, qos=1, properties=props)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise ConnectionLost(f"{self.url}: publish failed: {paho.error_string(info.rc)}")
        # on_publish cannot have run yet: it runs in a read callback on this loop, which we hold.
        conn.waiters[info.mid] = fut
        conn.flush()
        limit = timeout if timeout is not None else self.cfg.mqtt.connect_timeout
        try:
            async with asyncio.timeout(limit):
                await fut
        except TimeoutError:
            conn.waiters.pop(info.mid, None)
            raise ConnectionLost(f"{self.url}: no PUBACK within {limit:.0f} s") from None


_ENDS = ("lost", "pause")


def _received(kind: str, item: Any) -> list[Received]:
    if kind == "crash":  # the reader failed (PahoConn._on_readable): end the session
        raise InvalidState(f"the reader failed: {type(item).__name__}: {item}") from item
    return list(item)


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)
