"""The benchmarks' WAN link: a TCP proxy in its own process (tests/netproxy.NetProxy, whose
pump reads each side) that models a link in each direction and counts the bytes crossing it
(bench/edge_latency.py).

Each direction is one link shared by every connection through the proxy, as a home or 4G
line is shared by the devices behind it:

* **bandwidth** (bytes/s, 0 = unlimited): a chunk is transmitted after the chunks that reached
  the link before it, from any connection (a FIFO), and takes ``len / rate`` on it; the
  proxy holds at most ``BUFFER_S`` of queued transmission before it stops reading the
  sender's socket, so TCP's flow control pushes back as on a congested line;
* **delay** (seconds, one way): a chunk leaves ``delay`` after it was transmitted
  (pipelined: later chunks are not held up behind it).

With bandwidth 0 it is the older model (delay only), where 20 devices pulling the same
backlog across "the internet" cost the link nothing extra.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers import free_port
from tests.netproxy import NetProxy, _Link

PIECE = 16 * 1024
"""Bytes a chunk is cut into on a rate-limited link, so a 64 KiB read does not arrive as one
lump 26 ms late at 20 Mbit/s: each piece leaves as soon as it has been transmitted."""
BUFFER_S = 0.1
"""Seconds of transmission the link queues before the proxy stops reading (a router's
buffer); beyond it the sender's socket fills and TCP slows it down."""


def mbit(text: str) -> tuple[float, float]:
    """``DOWN[/UP]`` in Mbit/s (``20/5``; ``0``: unlimited) as bytes/s, down and up."""
    down, _, up = text.partition("/")
    rates = float(down), float(up or down)
    if min(rates) < 0:
        raise ValueError(f"bandwidth {text!r}: Mbit/s cannot be negative")
    return rates[0] * 1e6 / 8, rates[1] * 1e6 / 8


class WanProxy(NetProxy):
    """NetProxy with a shared rate limit and a pipelined one-way delay per direction, and a
    byte count per direction (cloud → LAN is ``down``)."""

    def __init__(self, target_port: int, port: int, delay: float, rates: tuple[float, float],
                 down: Any, up: Any) -> None:  # fmt: skip
        super().__init__("127.0.0.1", target_port, port=port)
        self.wan_delay = delay
        self.rates = {"down": rates[0], "up": rates[1]}
        self.counters = {"down": down, "up": up}  # shared multiprocessing Values
        self._free_at = {"down": 0.0, "up": 0.0}  # when each link has sent what it holds
        self._senders: dict[tuple[int, str], tuple[queue.Queue[Any], threading.Thread]] = {}

    def _pump(
        self, link: _Link, src: socket.socket, dst: socket.socket, gate: threading.Event,
        direction: str,
    ) -> None:  # fmt: skip
        # (no stalls in the benchmark: the gate that NetProxy uses for them is never closed)
        pending: queue.Queue[tuple[float, bytes] | None] = queue.Queue()
        sender = threading.Thread(target=self._send, args=(link, dst, pending), daemon=True)
        with self._lock:
            self._senders[(id(link), direction)] = (pending, sender)
        sender.start()
        super()._pump(link, src, dst, gate, direction)

    def _forward(
        self, link: _Link, dst: socket.socket, data: bytes, gate: threading.Event, direction: str
    ) -> bool:
        counter = self.counters[direction]
        with counter.get_lock():
            counter.value += len(data)
        pending = self._senders[(id(link), direction)][0]
        rate = self.rates[direction]
        if not rate:
            pending.put((time.monotonic() + self.wan_delay, data))
            return True
        for i in range(0, len(data), PIECE):
            piece = data[i : i + PIECE]
            with self._lock:
                now = time.monotonic()
                start = max(now, self._free_at[direction])
                self._free_at[direction] = done = start + len(piece) / rate
            pending.put((done + self.wan_delay, piece))
            if start - now > BUFFER_S:
                time.sleep(start - now - BUFFER_S)  # the link's buffer is full: stop reading
        return True

    def _ended(self, link: _Link, direction: str) -> None:
        pending, sender = self._senders.pop((id(link), direction))
        pending.put(None)  # what is queued still crosses the link, then both sides close
        sender.join(timeout=60)
        link.close()

    @staticmethod
    def _send(link: _Link, dst: socket.socket, pending: queue.Queue[Any]) -> None:
        while True:
            item = pending.get()
            if item is None or link.closed:
                return
            due, data = item
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                dst.sendall(data)
            except OSError:
                link.close()
                return


def _proxy_main(target: int, port: int, delay: float, rates: tuple[float, float], down: Any,
                up: Any, ready: Any) -> None:  # fmt: skip
    WanProxy(target, port, delay, rates, down, up).start()
    ready.set()
    while True:
        time.sleep(3600)


class WanLink:
    """The WAN link in its own process, so forwarding never competes with the agents' GIL.
    ``rates``: bytes/s down (cloud → LAN) and up, 0 for unlimited (``mbit``)."""

    def __init__(self, target_port: int, delay: float, rates: tuple[float, float] = (0, 0)
                 ) -> None:  # fmt: skip
        ctx = mp.get_context("spawn")
        self.port = free_port()
        self._down = ctx.Value("q", 0)
        self._up = ctx.Value("q", 0)
        ready = ctx.Event()
        self._proc = ctx.Process(
            target=_proxy_main,
            args=(target_port, self.port, delay, rates, self._down, self._up, ready),
            daemon=True,
        )
        self._proc.start()
        if not ready.wait(30):
            raise RuntimeError("the WAN proxy did not start")

    @property
    def down(self) -> int:
        return int(self._down.value)

    @property
    def up(self) -> int:
        return int(self._up.value)

    def reset(self) -> None:
        for v in (self._down, self._up):
            with v.get_lock():
                v.value = 0

    def __enter__(self) -> WanLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self._proc.terminate()
        self._proc.join(timeout=10)
