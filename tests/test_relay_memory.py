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

import pytest

from edge_relay.core import Filters
from edge_relay.hub import Subscriber
from edge_relay.livequeue import LiveQueue
from tests.helpers import child_env

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
