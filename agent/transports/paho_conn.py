"""One paho client driven by the asyncio loop: the MQTT transport's socket side.

Part of the MQTT transport (``agent.transports.mqtt``; with it, the only paho importers).
It knows how to feed paho from the loop and how to shut a link down; what the packets mean
(sessions, batches, acks) is the transport's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from agent.errors import ConnectionLost
from agent.transports.mqtt_redelivery import InFlight

log = logging.getLogger("pushagent.mqtt")

READ_BURST = 256  # packets read per readable event before other tasks get the loop
# A received message as the transport keeps it until its PUBACK: (packet id, QoS, DUP, RETAIN,
# topic, payload); topic None: not valid UTF-8, rejected at decode. A plain tuple of ints/str/bytes,
# not paho's MQTTMessage: that one drags along MQTT 5 Properties and an MQTTMessageInfo with a
# threading.Condition, and a backlog keeps thousands alive across a commit, which every GC
# pass then walks (~0.3 s of a 2 s drain). The cyclic GC stops tracking such a tuple at its
# first pass, and paho's objects die as on_message returns.
Received = tuple[int, int, bool, bool, str | None, bytes]


class PahoConn:
    """One connected paho client, driven by the asyncio loop: its events, its PUBACK waiters.

    After the blocking connect (a worker thread) everything happens on the loop: ``attach``
    registers the socket with ``add_reader``, and with ``add_writer`` while paho has bytes
    queued (paho's ``on_socket_register_write``/``unregister_write``); paho's callbacks then
    run inside ``loop_read``/``loop_write`` on the loop, so they touch asyncio objects
    directly. ``loop_misc`` (keepalive pings) is called by the transport's watchdog.
    """

    def __init__(self, client: paho.Client, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.loop = loop
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        """``("msgs", [Received, ...])`` in receive order, ``("lost", why)``,
        ``("crash", exception)`` when reading failed, or ``("pause", None)``: the SUBSCRIBEs
        are done (the transport's ``_subscribe``)."""
        self.connack: asyncio.Future[tuple[ReasonCode | int, bool]] = loop.create_future()
        self.waiters: dict[int, asyncio.Future[None]] = {}
        self.suback: asyncio.Future[list[ReasonCode]] = loop.create_future()
        self.closed: str | None = None
        """Why the link closed (paho's on_disconnect), once it has."""
        self.subacks = 0
        """SUBACKs received on this link (a close after one is no protocol refusal)."""
        self.last_in = time.monotonic()
        self.lost = False
        self.inbox: list[Received] = []
        self.inflight = InFlight()
        """This link's QoS 1 messages not yet acked: their resends here are dropped unacked."""
        self.packets = 0
        """Packets paho handed to a callback: a read burst stops when this stands still."""
        self._fd = -1

    # --- paho on the loop -----------------------------------------------------------------

    def attach(self) -> None:
        """Start driving the connected client from the loop."""
        client = self.client
        sock = client.socket()
        if sock is None:
            raise ConnectionLost("the connection closed before it could be used")
        self._fd = sock.fileno()
        client.on_socket_close = lambda c, u, s: self.detach()
        client.on_socket_register_write = lambda c, u, s: self._watch_write(True)
        client.on_socket_unregister_write = lambda c, u, s: self._watch_write(False)
        self.loop.add_reader(self._fd, self._on_readable)
        if client.want_write():
            client.loop_write()  # whatever paho queued meanwhile; registers the writer if needed

    def detach(self) -> None:
        """Stop watching the socket (paho calls this right before it closes it)."""
        if self._fd >= 0:
            self.loop.remove_reader(self._fd)
            self.loop.remove_writer(self._fd)
            self._fd = -1

    def _watch_write(self, on: bool) -> None:
        if self._fd < 0:
            return
        if on:
            self.loop.add_writer(self._fd, self.client.loop_write)
        else:
            self.loop.remove_writer(self._fd)

    def _on_readable(self) -> None:
        """The reader, owned: a failure in it (ours or paho's) ends the session with its
        reason (an event the transport raises), instead of a traceback in the loop's log
        and a socket nobody reads any more."""
        try:
            self._readable()
        except Exception as exc:  # noqa: BLE001 - handed to the transport, which logs it
            self.detach()
            self.events.put_nowait(("crash", exc))

    def _readable(self) -> None:
        """Read what has arrived, up to a burst, and queue its messages as one event."""
        self.last_in = time.monotonic()
        client = self.client
        for _ in range(READ_BURST):
            before = self.packets
            # paho reads ONE packet per call (when nothing of ours is in flight); a call
            # that produced no callback read nothing whole (or a PINGRESP): stop there, the
            # socket stays readable if more is waiting.
            if client.loop_read() != paho.MQTT_ERR_SUCCESS or self.packets == before:
                break
        if self.inbox:
            self.events.put_nowait(("msgs", self.inbox))
            self.inbox = []
        sock = client.socket()
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            self.loop.call_soon(self._on_readable)  # decrypted bytes the selector cannot see

    def flush(self) -> None:
        """Write what paho has queued now (acks after a commit) instead of next iteration."""
        if self.client.want_write():
            self.client.loop_write()

    def shutdown(self) -> None:
        """DISCONNECT if the link takes it, then close the socket whatever happened."""
        client = self.client
        if client.socket() is not None:
            try:
                client.disconnect()
                client.loop_write()  # paho closes the socket once DISCONNECT is written
            except Exception:
                log.debug("disconnect failed", exc_info=True)
        self.detach()
        sock = client.socket()
        if sock is not None:  # a stalled link did not take the DISCONNECT
            with contextlib.suppress(OSError):
                sock.close()

    # --- the transport's side -----------------------------------------------------------------

    def fail_waiters(self, why: str) -> None:
        for fut in self.waiters.values():
            if not fut.done():
                fut.set_exception(ConnectionLost(why))
        self.waiters.clear()

    def kill(self) -> None:
        """Shut the socket down (a stalled link): the reader sees EOF and paho reports it."""
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
