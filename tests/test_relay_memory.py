"""What an idle relay and an idle subscriber cost: imports, objects and tasks per stream.

The figures themselves (RSS, KiB per subscriber) are in ``bench/relay_memory.py`` and
docs/PERFORMANCE.md; these tests pin the causes, so a change that brings one back fails here.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest

from edge_relay import config
from edge_relay.core import Filters
from edge_relay.live import Subscriber
from edge_relay.livequeue import LiveQueue
from edge_relay.service import running
from tests.helpers import child_env, free_port

# --- imports: only what the configuration uses ---------------------------------------------


def test_serving_without_mdns_or_upstream_imports_neither_zeroconf_nor_paho() -> None:
    code = (
        "import sys, json, edge_relay.cli, edge_relay.service; "
        "print(json.dumps(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('zeroconf', 'paho') or m == 'agent.transports.mqtt')))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True,
                         text=True, timeout=60, check=True)  # fmt: skip
    assert json.loads(out.stdout) == []


# --- one subscriber's objects --------------------------------------------------------------


def test_an_idle_subscriber_object_is_under_a_kibibyte() -> None:
    """It was ~4.4 KiB: an asyncio.Queue (three deques and an Event, ~3 KiB), a __dict__ and
    two fresh empty frozensets for "no filters"."""
    n = 1000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        subs = [Subscriber(("alerts",), Filters.parse(None, None), queue_size=1000,
                           on_overflow=lambda: None) for _ in range(n)]  # fmt: skip
        per_sub = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    assert len(subs) == n
    assert per_sub < 1024, f"{per_sub:.0f} bytes per idle Subscriber"


async def test_live_queue_is_fifo_bounded_and_wakes_its_consumer() -> None:
    q: LiveQueue[int] = LiveQueue(3)
    assert q.empty() and q.qsize() == 0
    with pytest.raises(asyncio.QueueEmpty):
        q.get_nowait()
    for i in range(3):
        q.put_nowait(i)
    with pytest.raises(asyncio.QueueFull):
        q.put_nowait(3)
    assert [q.get_nowait(), await q.get(), q.get_nowait()] == [0, 1, 2]
    assert q.empty()
    waiting = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    q.put_nowait(7)
    assert await asyncio.wait_for(waiting, 5) == 7


async def test_live_queue_get_cancelled_by_a_timeout_leaves_it_usable() -> None:
    q: LiveQueue[str] = LiveQueue(10)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await q.get()
    q.put_nowait("after")
    assert await asyncio.wait_for(q.get(), 5) == "after"
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await q.get()


# --- tasks per open stream, in a real relay (in this process) -------------------------------

# The relay keys its state with a string (server.make_app); in a subprocess that warning is not
# seen, in this process the suite's filterwarnings=error would make it the test's failure.
in_process = pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")

_WS = (
    "GET /alerts/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: ZWRnZXB1c2gtYmVuY2gtMQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
_SSE = "GET /alerts/sse HTTP/1.1\r\nHost: x\r\n\r\n"


async def _tasks_per_stream(tmp_path: Path, request: str, n: int = 20) -> float:
    port = free_port()
    cfg = config.load({"listen": f"127.0.0.1:{port}", "data_dir": str(tmp_path / "data"),
                       "advertise": False})  # fmt: skip
    cfg = replace(cfg, keepalive=300.0)
    async with running(cfg) as state:
        idle = len(asyncio.all_tasks())
        conns = []
        for _ in range(n):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(request.encode())
            await asyncio.wait_for(r.readuntil(b"open"), 10)
            conns.append(w)
        deadline = asyncio.get_running_loop().time() + 10
        while state.hub.subscriber_count < n and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert state.hub.subscriber_count == n
        per_stream = (len(asyncio.all_tasks()) - idle) / n
        for w in conns:
            w.close()
        while state.hub.subscriber_count and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert state.hub.subscriber_count == 0  # each stream ended when its client left
    return per_stream


@in_process
async def test_an_idle_websocket_stream_runs_three_tasks_not_four(tmp_path: Path) -> None:
    # aiohttp's connection and request tasks, and the stream's body; the client's frames are
    # read in the request's task (before: a fourth task of its own, plus asyncio.wait's).
    assert await _tasks_per_stream(tmp_path, _WS) == 3


@in_process
async def test_an_idle_sse_stream_runs_three_tasks(tmp_path: Path) -> None:
    assert await _tasks_per_stream(tmp_path, _SSE) == 3


@in_process
async def test_a_websocket_whose_stream_ends_first_is_closed_and_forgotten(
    tmp_path: Path,
) -> None:
    """The body ending before the client (here ``poll=1``: replay, then done) must end the
    reading it no longer runs in a task of its own: a close frame, and the stream forgotten."""
    port = free_port()
    cfg = config.load({"listen": f"127.0.0.1:{port}", "data_dir": str(tmp_path / "data"),
                       "advertise": False})  # fmt: skip
    async with running(cfg) as state:
        from agent.envelope import from_fields

        await state.hub.publish([from_fields({"message": "cached"}, topic="alerts")])
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(_WS.replace("/alerts/ws", "/alerts/ws?poll=1").encode())
        async with asyncio.timeout(10):
            head = await r.readuntil(b"\r\n\r\n")
            frames = await r.read(65536)
            while not frames.endswith(b"\x88\x02\x03\xe8"):  # close frame, code 1000
                more = await r.read(65536)
                assert more, f"closed without a close frame after {frames!r}"
                frames += more
        assert head.startswith(b"HTTP/1.1 101") and b'"message":"cached"' in frames
        w.close()
        deadline = asyncio.get_running_loop().time() + 10
        while state.hub.subscriber_count and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert state.hub.subscriber_count == 0
