"""bench/_wan.py's WAN link: one rate-limited line per direction shared by every connection,
and a pipelined delay (what bench/edge_latency.py's figures rest on)."""

from __future__ import annotations

import multiprocessing as mp
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from _wan import WanProxy, mbit

from tests.helpers import free_port

SIZE = 300_000


@pytest.fixture
def cloud() -> Iterator[int]:
    """A server that sends SIZE bytes to each connection and closes it."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    running = True

    def serve() -> None:
        while running:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=_send_all, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    running = False
    thread.join(timeout=5)
    server.close()


def _send_all(conn: socket.socket) -> None:
    with conn:
        conn.sendall(b"x" * SIZE)


def _fetch(port: int, out: list[tuple[int, float]]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        got = 0
        while chunk := s.recv(65536):
            got += len(chunk)
        out.append((got, time.monotonic()))


def _proxy(target: int, delay: float, bandwidth: str) -> WanProxy:
    down, up = mp.Value("q", 0), mp.Value("q", 0)
    return WanProxy(target, free_port(), delay, mbit(bandwidth), down, up).start()


def test_connections_share_the_downlink(cloud: int) -> None:
    proxy = _proxy(cloud, 0.0, "8/1")  # 8 Mbit/s: 1 MB/s down
    try:
        out: list[tuple[int, float]] = []
        t0 = time.monotonic()
        threads = [threading.Thread(target=_fetch, args=(proxy.port, out)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert [got for got, _ in out] == [SIZE, SIZE]
        # 600 kB on a 1 MB/s line shared by both: not before 0.6 s (each alone: 0.3 s)
        assert max(done for _, done in out) - t0 >= 2 * SIZE / 1e6 * 0.95
        assert proxy.counters["down"].value == 2 * SIZE
    finally:
        proxy.close()


def test_unlimited_link_only_delays(cloud: int) -> None:
    proxy = _proxy(cloud, 0.2, "0")
    try:
        out: list[tuple[int, float]] = []
        t0 = time.monotonic()
        _fetch(proxy.port, out)
        assert out[0][0] == SIZE
        assert out[0][1] - t0 >= 0.2  # at least one one-way delay
        assert proxy.rates == {"down": 0, "up": 0}
    finally:
        proxy.close()


def test_bandwidth_values() -> None:
    assert mbit("20/5") == (2.5e6, 625e3)
    assert mbit("10") == (1.25e6, 1.25e6)
    assert mbit("0") == (0, 0)
    with pytest.raises(ValueError):
        mbit("-1")
