"""Synced read state: how long from a click on one device until the state is stored on the
user's 20 other devices, through a relay, against a plain message to the same 20 in the same
run.

One ``edge-relay`` process; 20 devices (the agent's real WebSocket transport and store, with
the service's commit: ``insert_batch`` then ``apply_remote_states``), spread round-robin over
``--workers`` processes; device A, the one clicked on, in this process (its own store and
transport). Each round:

* **message** (the baseline): ``PUT /<topic>`` a message; the time until each of the 20 has
  it stored;
* **state**: a click on A for that message, the agent's path from there: ``record_states``
  (the state and its receipt in A's store, one transaction), the outbox item, A's transport
  POSTing it to ``/v1/receipts``; the relay records it and sends ``message_state`` to the
  owner's streams; the time until each of the 20 has the state stored.

Times are ``time.monotonic()`` (one system-wide clock on Linux, so comparable across the
processes), from the request (message) or the click (state) to each device's commit. Both
are reported as p50/p99 over every device of every round, and the ratio of the state's to the
message's (target: within 1.5x).

    python bench/state_sync.py [--devices 20] [--rounds 50] [--workers 2]

Prints one JSON object per scenario and a final comparison object.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent import config  # noqa: E402
from agent.config import AgentConfig, WsConfig  # noqa: E402
from agent.store import Store, Stored  # noqa: E402
from agent.transports import Batch  # noqa: E402
from agent.transports.ws import WsTransport  # noqa: E402
from tests.relay import Relay  # noqa: E402

TOPIC = "statebench"


def _cfg(root: Path) -> AgentConfig:
    cfg = config.load({}, env={"PUSHAGENT_HOME": str(root / "home")})
    return replace(cfg, topics=(TOPIC,), ws=WsConfig(keepalive=45))


def _worker_main(out: Any, url: str, root: str, names: list[str]) -> None:
    asyncio.run(_worker(out, url, Path(root), names))


async def _worker(out: Any, url: str, root: Path, names: list[str]) -> None:
    """Devices that report ("message"|"state", id, device, time) for each commit."""
    cfg = _cfg(root)
    stores = [Store(root / f"{n}.db").open() for n in names]
    transports = [WsTransport(url, cfg, topics=(TOPIC,), store=s) for s in stores]

    def sink(i: int) -> Any:
        store, name = stores[i], names[i]

        def commit(batch: Batch) -> tuple[list[Stored], list[Stored]]:
            fresh = store.insert_batch(batch.messages, source=batch.source, cursor=batch.cursor)
            return fresh, store.apply_remote_states(batch.states, own_device=name)

        async def run(batch: Batch) -> None:
            fresh, moved = await asyncio.to_thread(commit, batch)
            now = time.monotonic()
            for s in fresh:
                out.put(("message", s.message.id, name, now))
            for s in moved:
                out.put(("state", s.message.id, name, now))

        return run

    tasks = [asyncio.create_task(t.run(sink(i))) for i, t in enumerate(transports)]
    try:
        while not all(t.state == "connected" for t in transports):
            await asyncio.sleep(0.01)
        out.put(("ready", "", "", 0.0))
        await asyncio.Event().wait()  # until the parent terminates this process
    finally:
        for t in tasks:
            t.cancel()


class Clicker:
    """Device A: its own store and transport; ``click`` is the agent's path after a click."""

    def __init__(self, url: str, root: Path) -> None:
        self.cfg = _cfg(root)
        self.store = Store(root / "a.db").open()
        self.transport = WsTransport(url, self.cfg, topics=(TOPIC,), store=self.store)
        self.seen: set[str] = set()

    async def sink(self, batch: Batch) -> None:
        fresh = await asyncio.to_thread(
            self.store.insert_batch, batch.messages, source=batch.source, cursor=batch.cursor
        )
        self.seen.update(s.message.id for s in fresh)

    async def click(self, mid: str) -> None:
        await asyncio.to_thread(
            self.store.record_states, [(mid, "clicked", time.time())],
            receipt_destination="edgepush/receipts/A", device="A", device_name="A",
        )  # fmt: skip
        items = await asyncio.to_thread(self.store.outbox_peek, 200)
        await asyncio.gather(*(self.transport.publish(i) for i in items))
        await asyncio.to_thread(self.store.outbox_done, [i.seq for i in items])


def _put(relay: Relay, text: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=15)
    try:
        conn.request("PUT", f"/{TOPIC}", text.encode())
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, body
        return str(json.loads(body)["id"])
    finally:
        conn.close()


async def _collect(q: Any, kind: str, mid: str, n: int, timeout: float = 30) -> list[float]:
    got: list[float] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{kind} {mid}: {len(got)} of {n} devices")
        try:
            k, i, _, at = await asyncio.to_thread(q.get, True, min(left, 1.0))
        except Exception:  # queue.Empty: look at the deadline again
            continue
        if k == kind and i == mid:
            got.append(at)
    return got


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def _summary(name: str, lat: list[float], args: argparse.Namespace) -> dict[str, Any]:
    ms = [x * 1000 for x in lat]
    return {"scenario": name, "devices": args.devices, "rounds": args.rounds,
            "samples": len(ms), "p50_ms": round(statistics.median(ms), 2),
            "p99_ms": round(_pct(ms, 99), 2), "max_ms": round(max(ms), 2)}  # fmt: skip


async def run(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    relay = Relay(root / "relay").start()
    ctx = mp.get_context("spawn")
    q: Any = ctx.Queue()
    procs = []
    try:
        for w in range(min(args.workers, args.devices)):
            names = [f"dev{i}" for i in range(w, args.devices, args.workers)]
            wroot = root / f"worker{w}"
            wroot.mkdir(parents=True)
            p = ctx.Process(target=_worker_main, args=(q, relay.url, str(wroot), names),
                            daemon=True)  # fmt: skip
            p.start()
            procs.append(p)
        ready = 0
        while ready < len(procs):
            kind, *_ = await asyncio.to_thread(q.get, True, 60)
            ready += kind == "ready"
        (root / "a").mkdir()
        a = Clicker(relay.url, root / "a")
        task = asyncio.create_task(a.transport.run(a.sink))
        while a.transport.state != "connected":
            await asyncio.sleep(0.01)
        message, state = [], []
        for r in range(args.rounds + 3):  # three warm-up rounds, not counted
            t0 = time.monotonic()
            mid = await asyncio.to_thread(_put, relay, f"round {r}")
            got = await _collect(q, "message", mid, args.devices)
            while mid not in a.seen:
                await asyncio.sleep(0.001)
            t1 = time.monotonic()
            await a.click(mid)
            done = await _collect(q, "state", mid, args.devices)
            if r >= 3:
                message += [g - t0 for g in got]
                state += [d - t1 for d in done]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        a.store.close()
    finally:
        for p in procs:
            p.terminate()
            p.join(10)
        relay.stop()
    m, s = _summary("message", message, args), _summary("state", state, args)
    ratio = {"scenario": "comparison",
             "p50_ratio": round(s["p50_ms"] / m["p50_ms"], 2),
             "p99_ratio": round(s["p99_ms"] / m["p99_ms"], 2), "target": 1.5}  # fmt: skip
    return [m, s, ratio]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="state-sync-") as tmp:
        for obj in asyncio.run(run(args, Path(tmp))):
            print(json.dumps(obj))


if __name__ == "__main__":
    main()
