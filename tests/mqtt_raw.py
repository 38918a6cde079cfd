"""A raw MQTT 3.1.1 (or 5) client on a socket, for probing what brokers really do on the wire.

paho hides what the probes need to see (the packet id and DUP flag of each PUBLISH as it
arrived) and acks on its own schedule; this client acks only when told and can cut its link
at any moment. Every broker under test speaks 3.1.1, so the probes compare like with like;
``version=5`` speaks MQTT 5 to a broker that has it (the same packets, with an empty property
list, and a session expiry on a persistent session).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass


def _varint(n: int) -> bytes:
    out = b""
    while True:
        n, digit = divmod(n, 128)
        out += bytes([digit | (0x80 if n else 0)])
        if not n:
            return out


def _s16(b: bytes) -> bytes:
    return len(b).to_bytes(2, "big") + b


@dataclass(frozen=True)
class Pub:
    """One PUBLISH as it arrived."""

    pid: int
    dup: bool
    payload: bytes


def _skip_props(b: bytes) -> bytes:
    """``b`` after the MQTT 5 property list it starts with."""
    length, mult, i = 0, 1, 0
    while True:
        c = b[i]
        length += (c & 0x7F) * mult
        mult *= 128
        i += 1
        if not c & 0x80:
            return b[i + length :]


class RawClient:
    """MQTT 3.1.1 (``version=5``: MQTT 5): CONNECT (clean session or not), SUBSCRIBE QoS 1,
    PUBLISH QoS 1, PUBACK on demand, and an abrupt close."""

    def __init__(self, port: int, client_id: str, *, clean: bool = False, version: int = 4) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.v5 = version == 5
        flags = 0x02 if clean else 0x00
        body = _s16(b"MQTT") + bytes([version, flags]) + (60).to_bytes(2, "big")
        if self.v5:  # a persistent session outlives the link by an hour (0x11: expiry)
            body += b"\x00" if clean else b"\x05\x11" + (3600).to_bytes(4, "big")
        body += _s16(client_id.encode())
        self._buf = b""
        try:
            self.sock.sendall(b"\x10" + _varint(len(body)) + body)
            kind, _, ack = self._read(10.0)
            if kind != 2 or ack[1] != 0:
                raise AssertionError(f"CONNECT refused: {kind} {ack!r}")
        except BaseException:
            self.sock.close()  # the caller has no client to close
            raise
        self.session_present = bool(ack[0] & 1)
        self._next_pid = 0

    def _read(self, timeout: float) -> tuple[int, int, bytes]:
        """(packet type, flags, body); TimeoutError when nothing came within ``timeout``."""
        self.sock.settimeout(timeout)
        while True:
            if len(self._buf) >= 2:
                length, mult, i = 0, 1, 1
                while i < len(self._buf):
                    c = self._buf[i]
                    length += (c & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not c & 0x80:
                        if len(self._buf) >= i + length:
                            head, body = self._buf[0], self._buf[i : i + length]
                            self._buf = self._buf[i + length :]
                            return head >> 4, head & 0x0F, body
                        break
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the broker closed the connection")
            self._buf += chunk

    def _props(self) -> bytes:
        return b"\x00" if self.v5 else b""

    def subscribe(self, topic: str) -> bytes:
        body = (1).to_bytes(2, "big") + self._props() + _s16(topic.encode()) + b"\x01"
        self.sock.sendall(b"\x82" + _varint(len(body)) + body)
        while True:
            kind, _, b = self._read(10.0)
            if kind == 9:
                return _skip_props(b[2:]) if self.v5 else b[2:]

    def publish(self, topic: str, payloads: list[bytes]) -> None:
        """QoS 1, one at a time, each waiting for its PUBACK."""
        for payload in payloads:
            self._next_pid = self._next_pid % 65535 + 1
            body = _s16(topic.encode()) + self._next_pid.to_bytes(2, "big") + self._props()
            body += payload
            self.sock.sendall(b"\x32" + _varint(len(body)) + body)
            while self._read(10.0)[0] != 4:
                pass

    def receive(self, n: int, timeout: float) -> list[Pub]:
        """Up to ``n`` PUBLISHes, waiting at most ``timeout`` for each."""
        got: list[Pub] = []
        while len(got) < n:
            try:
                kind, flags, b = self._read(timeout)
            except TimeoutError:
                break
            if kind == 3:
                tl = int.from_bytes(b[:2], "big")
                pid = int.from_bytes(b[2 + tl : 4 + tl], "big")
                rest = _skip_props(b[4 + tl :]) if self.v5 else b[4 + tl :]
                got.append(Pub(pid, bool(flags & 0x08), rest))
        return got

    def ack(self, pubs: list[Pub]) -> None:
        for p in pubs:
            self.sock.sendall(b"\x40\x02" + p.pid.to_bytes(2, "big"))

    def ping(self) -> None:
        """PINGREQ, wait for PINGRESP: the broker has read everything sent before it."""
        self.sock.sendall(b"\xc0\x00")
        while self._read(10.0)[0] != 13:
            pass

    def cut(self) -> None:
        """Close without DISCONNECT (the broker keeps the session and what was not acked)."""
        self.sock.close()
