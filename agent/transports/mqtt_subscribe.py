"""The connect/subscribe half of ``agent.transports.mqtt``: one attempt's paho ``Client``, its
blocking TCP/TLS connect and CONNECT, and the SUBSCRIBEs after the CONNACK.

Functions of the transport (``self`` is its ``MqttTransport``), kept apart only for size.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from typing import TYPE_CHECKING

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.backoff import backoff
from agent.errors import AuthError, ConnectionLost
from agent.transports import mqtt_protocol as proto
from agent.transports import tls_context
from agent.transports.paho_conn import PahoConn

if TYPE_CHECKING:
    from agent.transports.mqtt import MqttTransport

log = logging.getLogger("pushagent.mqtt")

RESENDS = 5
"""A SUBSCRIBE refused with a reason that can pass is sent again on the same connection up to
this many times (with backoff, the refusal's own wait counted) before the connection is dropped."""
RESEND_CAP = 8.0


def make_client(self: MqttTransport) -> paho.Client:
    v5 = self.protocol == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=self.client_id,
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        clean_session=None if v5 else not self.persistent,
        manual_ack=True,
        # We reconnect ourselves (backoff, a fresh Client): paho's own reconnect inside
        # its thread would resume the session behind our back.
        reconnect_on_failure=False,
    )
    if self._username:
        client.username_pw_set(self._username, self._password)
    tokens = self.tokens
    if tokens is not None:

        def before_connect(c: paho.Client, u: object, sock: object) -> None:
            # In the connect's worker thread, after TCP/TLS, before the CONNECT is sent: the
            # broker may begin a session from here on (agent.transports.mqtt_session).
            if not tokens.begin():
                if isinstance(sock, socket.socket):
                    sock.close()
                raise ConnectionLost(f"cannot write {tokens.path}: not connecting")

        client.on_socket_open = before_connect
    if self.parsed.tls:
        client.tls_set_context(tls_context(self.cfg.tls))
    return client


def connect(self: MqttTransport, client: paho.Client) -> None:
    """Blocking TCP/TLS connect and CONNECT (run in a worker thread)."""
    host, port = self.parsed.host, self.parsed.port
    keepalive = self.cfg.mqtt.keepalive
    try:
        if self.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if self.persistent:
                props.SessionExpiryInterval = self.cfg.mqtt.session_expiry
            client.connect(host, port, keepalive, clean_start=not self.persistent, properties=props)
        else:
            client.connect(host, port, keepalive)
    except ssl.SSLCertVerificationError as exc:
        raise AuthError(
            f"TLS failure with {host}:{port}: certificate verify failed: "
            f"{exc.verify_message} (is tls.ca_file the CA that signed the broker's?)"
        ) from None
    except ssl.SSLError as exc:
        raise AuthError(f"TLS failure with {host}:{port}: {exc.reason or exc}") from None
    except socket.gaierror:
        raise ConnectionLost(f"unknown host {host!r}") from None
    except OSError as exc:
        raise ConnectionLost(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None


async def subscribe(self: MqttTransport, conn: PahoConn, timeout: float) -> None:
    """The message topics in one SUBSCRIBE, then the synced-state topics in another.

    Apart, because a state topic is not worth the messages: a NATS cluster electing a
    leader times out each filter's JetStream consumer (4 s) and refuses the SUBSCRIBE;
    with the state filters in the same packet, a fresh agent was refused for 30 s (CI).
    A refused or unanswered state SUBSCRIBE is a warning: sync waits for a reconnect."""
    qos = self.cfg.mqtt.qos
    sync = f"{self.state_prefix}/" if self.state_prefix else None
    states = [t for t in self.topics if sync is not None and t.startswith(sync)]
    messages = [t for t in self.topics if t not in states]
    delays = backoff(cap=RESEND_CAP)
    pending = messages
    for attempt in range(RESENDS + 1):
        sent = time.monotonic()
        conn.client.subscribe([(t, qos) for t in pending])
        async with asyncio.timeout(timeout):
            codes = await conn.suback
        if len(codes) != len(pending):  # not one reason code per filter: none is known granted
            raise proto.suback_mismatch(len(codes), len(pending))
        refused = [(t, c) for t, c in zip(pending, codes, strict=True) if c.is_failure]
        # retried with backoff, or stop-and-tell: see mqtt_protocol
        errors = [proto.suback_error(t, c.value, str(c)) for t, c in refused]
        if not errors:
            break
        for error in errors:  # "not authorized" first: stop-and-tell
            if not isinstance(error, proto.SubscribeRefused):
                raise error
        if attempt == RESENDS:
            raise errors[0]
        # Sent again on the same connection: a reconnect would cost a CONNECT (which NATS can
        # close after its own 4 s session timeout) and the same refusals again. Only the
        # refused filters: a granted one sent again is replaced, and its retained messages
        # come again (MQTT 3.1.1 §3.8.4) on this connection, where they are all committed.
        pending = [t for t, _ in refused]
        delay = proto.retry_delay(errors[0], next(delays), time.monotonic() - sent)
        log.warning("%s: %s; sent again in %.1f s", self.url, errors[0], delay)
        # Made before the wait, so a link closed meanwhile fails it (on_disconnect) and ends
        # the wait: a SUBSCRIBE into a closed client is not sent, and its SUBACK never comes.
        _new_suback(conn)
        closed, _ = await asyncio.wait({conn.suback}, timeout=delay)
        if closed or conn.lost:
            gone = conn.suback.exception() if conn.suback.done() else None
            raise gone or errors[0]
    if not states:
        return
    _new_suback(conn)
    conn.client.subscribe([(t, qos) for t in states])
    try:
        async with asyncio.timeout(timeout):
            got: list[ReasonCode] | None = await conn.suback
    except TimeoutError:
        got = None
    failed = [c for c in got or () if c.is_failure]
    if got is not None and len(got) == len(states) and not failed:
        return
    why = (
        "no SUBACK in time" if got is None
        else f"{failed[0]} (0x{failed[0].value:02X})" if failed
        else str(proto.suback_mismatch(len(got), len(states)))
    )  # fmt: skip
    log.warning("%s: subscription to %s refused: %s; read state from other devices is "
                "not synced until the next connection", self.url, ", ".join(map(repr, states)),
                why)  # fmt: skip


def _new_suback(conn: PahoConn) -> None:
    """A fresh future for the next SUBACK (on_subscribe resolves it, on_disconnect fails it),
    failed at once when the link closed before it was made (a close read with the SUBACK)."""
    conn.suback = asyncio.get_running_loop().create_future()
    if conn.closed is not None:
        conn.suback.set_exception(proto.link_closed(conn.closed))
        conn.suback.exception()  # marks it retrieved
