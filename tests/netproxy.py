"""A small TCP proxy for fault tests: pass, delay, stall or cut the links through it.

    with NetProxy("127.0.0.1", broker.port) as proxy:
        url = f"mqtt://127.0.0.1:{proxy.port}"
        proxy.delay = 0.05      # every chunk waits 50 ms before it is forwarded
        proxy.stall()           # links open now stop forwarding (sockets stay open)
        proxy.stall(direction="up")  # ... only client -> target (the client's acks vanish)
        proxy.resume()          # ... and forward again (what they read meanwhile included)
        proxy.cut()             # close every open link (both sides)
        proxy.sent              # with record=True: every byte client -> target, in order

``stall()`` affects the links open at that moment; links accepted later flow normally
(``stall(new_links=True)`` stalls those too until ``resume()``). Threads, not asyncio, so
it works beside any client library; ``close()`` joins them and closes every socket.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType

from tests.helpers import free_port


class _Link:
    def __init__(self, client: socket.socket, upstream: socket.socket, stalled: bool) -> None:
        self.client = client
        self.upstream = upstream
        # one gate per direction: "up" is client -> target, "down" target -> client
        self.gates = {"up": threading.Event(), "down": threading.Event()}
        if not stalled:
            for gate in self.gates.values():
                gate.set()
        self.closed = False
        self.lock = threading.Lock()

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for gate in self.gates.values():
            gate.set()  # release a stalled pump so it sees the close
        for s in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


class NetProxy:
    """Listen on 127.0.0.1:``port`` and forward each connection to ``host:target_port``."""

    def __init__(
        self, host: str, target_port: int, *, port: int | None = None, record: bool = False
    ) -> None:
        self.target = (host, target_port)
        self.record = record
        self.sent = bytearray()
        """With ``record``: what clients sent through the proxy (all links, in order)."""
        self.port = port or free_port()
        self.delay = 0.0
        self._stall_new = False
        self._links: list[_Link] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._running = False
        self._server: socket.socket | None = None
        self.accepted = 0
        self.moved = {"up": 0, "down": 0}
        """Bytes forwarded each way (client -> target, target -> client): what the wire
        carried."""

    def start(self) -> NetProxy:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        server.settimeout(0.1)
        self._server = server
        self._running = True
        self._spawn(self._accept_loop)
        return self

    def __enter__(self) -> NetProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _spawn(self, target: object, *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        assert self._server is not None
        while self._running:
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()  # target down: the client sees the connection close
                continue
            for s in (client, upstream):
                s.settimeout(None)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, upstream, self._stall_new)
            with self._lock:
                self._links.append(link)
                self.accepted += 1
            self._spawn(self._pump, link, client, upstream, link.gates["up"], "up")
            self._spawn(self._pump, link, upstream, client, link.gates["down"], "down")

    def _pump(
        self, link: _Link, src: socket.socket, dst: socket.socket, gate: threading.Event,
        direction: str,
    ) -> None:  # fmt: skip
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._ended(link, direction)
                return
            if not self._forward(link, dst, data, gate, direction):
                return

    def _forward(
        self, link: _Link, dst: socket.socket, data: bytes, gate: threading.Event, direction: str
    ) -> bool:
        """Send one chunk read from the other side on to ``dst``; False once the link is
        closed. (A subclass models another link here: bench/_wan.py's WAN delay and
        bandwidth.)"""
        if self.delay:
            time.sleep(self.delay)
        gate.wait()
        if link.closed:
            return False
        try:
            dst.sendall(data)
        except OSError:
            link.close()
            return False
        with self._lock:
            self.moved[direction] += len(data)
            if self.record and direction == "up":
                self.sent += data
        return True

    def _ended(self, link: _Link, direction: str) -> None:
        """The ``direction`` side hit end of stream: close both."""
        link.close()

    @property
    def links(self) -> list[_Link]:
        with self._lock:
            return [link for link in self._links if not link.closed]

    def stall(self, *, new_links: bool = False, direction: str = "both") -> None:
        """Stop forwarding on every open link (and new ones with ``new_links``).

        ``direction="up"`` stalls only client -> target (what the client sends is read and
        held, never delivered), ``"down"`` only target -> client.
        """
        self._stall_new = new_links
        names = ("up", "down") if direction == "both" else (direction,)
        for link in self.links:
            for name in names:
                link.gates[name].clear()

    def resume(self) -> None:
        self._stall_new = False
        for link in self.links:
            for gate in link.gates.values():
                gate.set()

    def cut(self) -> None:
        """Close every open link, both sides."""
        for link in self.links:
            link.close()

    def close(self) -> None:
        self._running = False
        if self._server is not None:
            self._server.close()
            self._server = None
        with self._lock:
            links, threads = list(self._links), list(self._threads)
        for link in links:
            link.close()
        for t in threads:
            t.join(timeout=5)
