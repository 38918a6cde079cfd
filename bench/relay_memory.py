"""Relay memory: base RSS and KiB per idle subscriber (WebSocket and SSE), same-run baselines.

    python bench/relay_memory.py [--idle 1000,5000] [--formats ws,sse] [--runs 3]
                                 [--tree before=/tmp/relay-before] [--tree after=.]
    python bench/relay_memory.py --trace 1000 [--formats ws]      # where a subscriber's bytes go

For each run, each tree (``--tree LABEL=PATH``: a checkout of the code to run; default this
one) and each format, interleaved: a relay is started on a data directory an earlier start
already created (a restart, the usual case: no migration runs), one publish warms its code
paths, its RSS is the base; then idle subscribers connect (raw sockets from
``--clients`` processes, that only hold) and the RSS is read again at each ``--idle`` size.
KiB per subscriber = (RSS held - base) / N. The first start on an empty directory is
reported too (it runs the store's migrations, which import sqlite-utils).

Baselines in the same run: ``python`` doing nothing but ``import asyncio`` (the floor of
any asyncio service), and ``bare-aiohttp``: an aiohttp server that only holds the same
WebSocket / SSE connections (the floor of any relay built on aiohttp). Every process runs
with compiled bytecode (``PYTHONDONTWRITEBYTECODE`` unset: the first start of a
tree writes its ``__pycache__``), as an installed relay does. Medians over the runs; one JSON
object per line.

``--trace N``: one relay in this process under tracemalloc with N idle subscribers of the
first format; the allocations they hold, per subscriber, by line (what to cut next).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.relay_fanout import CONFIG, TOPIC, _Counter, _rss_kib, _Sub, _WsSub  # noqa: E402
from tests.helpers import child_env, free_port, wait_for  # noqa: E402
from tests.relay import Relay  # noqa: E402


class _SseSub(_Sub):
    """``GET /bench/sse``; ready at the ``open`` event, then it only holds."""

    def hello(self, transport: Any) -> None:
        transport.write(f"GET /{TOPIC}/sse HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())

    def frames(self, sends: list[float]) -> int:
        if not self.ready.done() and b"open" in self.buf:
            self.ready.set_result(None)
        return len(self.buf)


async def _hold(port: int, fmt: str, n: int) -> None:
    """Client process: ``n`` idle subscribers, opened in waves, then hold until stdin."""
    loop = asyncio.get_running_loop()
    counter = _Counter(2**62)
    gate = asyncio.Semaphore(64)

    async def one() -> _Sub:
        sub: _Sub = _WsSub(counter) if fmt == "ws" else _SseSub(counter)
        async with gate:
            await loop.create_connection(lambda: sub, "127.0.0.1", port)
            await asyncio.wait_for(sub.ready, 60)
        return sub

    while True:
        more = sys.stdin.readline().strip()
        if not more.isdigit():
            return
        await asyncio.gather(*(one() for _ in range(int(more))))
        print("ready", flush=True)


class Holders:
    """``clients`` holder processes; ``add(n)`` opens n more subscribers, spread over them."""

    def __init__(self, port: int, fmt: str, clients: int) -> None:
        cmd = [__file__, "--hold", str(port), fmt]
        self.procs = [_python(cmd, child_env()) for _ in range(clients)]

    def add(self, n: int) -> None:
        k = len(self.procs)
        for i, p in enumerate(self.procs):
            assert p.stdin is not None
            p.stdin.write(f"{n // k + (1 if i < n % k else 0)}\n")
            p.stdin.flush()
        for p in self.procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"

    def close(self) -> None:
        for p in self.procs:
            p.communicate("done\n", timeout=120)


def _python(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, *args], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip


def _env(tree: Path) -> dict[str, str]:
    env = child_env(PYTHONPATH=str(tree))
    # Compiled once, like an installed relay: compiling its modules at every start leaves
    # the compiler's memory in the process's RSS, which is not what the relay costs.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _settle(pid: int) -> int:
    """RSS once it stops moving (connections just accepted may still be allocating)."""
    last = -1
    for _ in range(20):
        now = _rss_kib(pid)
        if now == last:
            return now
        last = now
        time.sleep(0.1)
    return last


def relay_rows(
    tree: str, path: Path, tmp: Path, fmt: str, sizes: list[int], clients: int
) -> dict[str, Any]:
    data = tmp / f"relay-{tree}"
    first = None
    if not (data / "data").exists():
        relay = Relay(data, config=CONFIG, env=_env(path)).start()
        relay.publish(TOPIC, "warm-up")
        assert relay.proc is not None
        first = _settle(relay.proc.pid)
        relay.stop()
    relay = Relay(data, config=CONFIG, env=_env(path)).start()
    try:
        relay.publish(TOPIC, "warm-up")
        assert relay.proc is not None
        row = _held(relay.proc.pid, relay.port, fmt, sizes, clients, relay)
    finally:
        relay.stop()
    return {"server": "relay", "tree": tree, "format": fmt, "rss_first_start_kib": first, **row}


def _held(
    pid: int, port: int, fmt: str, sizes: list[int], clients: int, relay: Relay | None = None
) -> dict[str, Any]:
    base = _settle(pid)
    row: dict[str, Any] = {"rss_base_kib": base}
    holders = Holders(port, fmt, clients)
    try:
        have = 0
        for n in sizes:
            holders.add(n - have)
            have = n
            held = _settle(pid)
            row[f"rss_{n}_kib"] = held
            row[f"kib_per_sub_{n}"] = round((held - base) / n, 2)
        if relay is not None:  # every subscriber counted is one the relay holds
            _, health = relay.request("GET", "/v1/health")
            assert health["subscribers"] == sizes[-1], health
    finally:
        holders.close()
    return row


async def _bare(port: int) -> None:
    """A bare aiohttp server holding WebSocket / SSE subscribers: the framework's floor."""
    from aiohttp import web

    async def ws(request: web.Request) -> web.StreamResponse:
        resp = web.WebSocketResponse(heartbeat=None, compress=False)
        await resp.prepare(request)
        await resp.send_str('{"event":"open"}')
        async for _ in resp:
            pass
        return resp

    async def sse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'event: open\ndata: {"event":"open"}\n\n')
        while True:
            await asyncio.sleep(300)
            await resp.write(b"event: keepalive\ndata: {}\n\n")

    app = web.Application()
    app.router.add_get(f"/{TOPIC}/ws", ws)
    app.router.add_get(f"/{TOPIC}/sse", sse)
    app.router.add_get("/v1/health", lambda _: asyncio.sleep(0, web.json_response({})))
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    await runner.cleanup()


def bare_rows(fmt: str, sizes: list[int], clients: int) -> dict[str, Any]:
    port = free_port()
    env = _env(ROOT)
    proc = _python([__file__, "--bare", str(port)], env)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        row = _held(proc.pid, port, fmt, sizes, clients)
    finally:
        proc.communicate("done\n", timeout=30)
    return {"server": "bare-aiohttp", "format": fmt, **row}


def floor_row() -> dict[str, Any]:
    """``python -c 'import asyncio'`` then idle: the interpreter's own share of any base."""
    code = "import asyncio, sys; print('ready', flush=True); sys.stdin.readline()"
    proc = _python(["-c", code], _env(ROOT))
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    rss = _settle(proc.pid)
    proc.communicate("done\n", timeout=30)
    return {"server": "python+asyncio", "rss_base_kib": rss}


def _key(row: dict[str, Any]) -> tuple[str, str | None, str | None]:
    return row["server"], row.get("tree"), row.get("format")


def _summary(rows: list[dict[str, Any]], sizes: list[int]) -> list[dict[str, Any]]:
    """Medians over the runs per (server, tree, format)."""
    out = []
    keys = dict.fromkeys(_key(r) for r in rows)
    for server, tree, fmt in keys:
        rs = [
            r for r in rows if (r["server"], r.get("tree"), r.get("format")) == (server, tree, fmt)
        ]
        line: dict[str, Any] = {"summary": True, "server": server, "tree": tree, "format": fmt,
                                "runs": len(rs)}  # fmt: skip
        fields = ["rss_base_kib", *(f"kib_per_sub_{n}" for n in sizes if fmt)]
        for f in fields:
            line[f] = statistics.median(r[f] for r in rs)
            line[f"{f}_per_run"] = [r[f] for r in rs]
        firsts = [r["rss_first_start_kib"] for r in rs if r.get("rss_first_start_kib")]
        if firsts:
            line["rss_first_start_kib"] = statistics.median(firsts)
        out.append(line)
    return out


async def _trace(n: int, fmt: str, top: int) -> None:
    """One relay in this process, under tracemalloc, with ``n`` idle subscribers."""
    import gc
    from dataclasses import replace

    from edge_relay import config
    from edge_relay.service import running

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        cfg = config.load({"listen": f"127.0.0.1:{port}", "data_dir": tmp, "advertise": False})
        cfg = replace(cfg, keepalive=300.0,
                      limits=replace(cfg.limits, max_subscriptions=10 * n))  # fmt: skip
        async with running(cfg) as state:
            tracemalloc.start(1)
            gc.collect()
            before = tracemalloc.take_snapshot()
            holders = Holders(port, fmt, 1)
            await asyncio.to_thread(holders.add, n)
            await asyncio.to_thread(wait_for, lambda: state.hub.subscriber_count == n, timeout=60)
            gc.collect()
            diff = tracemalloc.take_snapshot().compare_to(before, "lineno")
            total = sum(d.size_diff for d in diff)
            print(json.dumps({"trace": fmt, "subscribers": n, "traced_bytes_per_sub":
                              round(total / n), "blocks_per_sub": round(
                                  sum(d.count_diff for d in diff) / n, 1)}))  # fmt: skip
            for d in diff[:top]:
                where = d.traceback[0]
                name = where.filename.replace(f"{ROOT}/", "").split("site-packages/")[-1]
                name = name.split("python3.11/")[-1]
                print(json.dumps({"bytes_per_sub": round(d.size_diff / n),
                                  "blocks_per_sub": round(d.count_diff / n, 2),
                                  "at": f"{name}:{where.lineno}"}))  # fmt: skip
            tracemalloc.stop()
            await asyncio.to_thread(holders.close)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", default="1000,5000")
    ap.add_argument("--formats", default="ws,sse")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--tree", action="append", metavar="LABEL=PATH",
                    help="a checkout to run (repeatable); default: this one")  # fmt: skip
    ap.add_argument("--no-baselines", action="store_true", help="no python / bare-aiohttp rows")
    ap.add_argument("--trace", type=int, metavar="N", help="tracemalloc with N subscribers")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    sizes = sorted(int(x) for x in args.idle.split(",") if x)
    formats = [f for f in args.formats.split(",") if f]
    if args.trace:
        asyncio.run(_trace(args.trace, formats[0], args.top))
        return
    trees = [(t.split("=", 1)[0], Path(t.split("=", 1)[1]).resolve()) for t in args.tree or []]
    trees = trees or [("this", ROOT)]
    print(json.dumps({"loadavg_start": os.getloadavg(), "trees": {k: str(v) for k, v in trees}}))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.chdir(tmp)  # `python -m edge_relay` puts the working folder first on sys.path
        for run in range(args.runs):
            for label, path in trees if run % 2 == 0 else trees[::-1]:
                for fmt in formats:
                    rows.append(relay_rows(label, path, tmp, fmt, sizes, args.clients))
                    print(json.dumps({"run": run, **rows[-1]}), flush=True)
            if not args.no_baselines:
                rows.append(floor_row())
                print(json.dumps({"run": run, **rows[-1]}), flush=True)
                for fmt in formats:
                    rows.append(bare_rows(fmt, sizes, args.clients))
                    print(json.dumps({"run": run, **rows[-1]}), flush=True)
    for line in _summary(rows, sizes):
        print(json.dumps(line), flush=True)
    print(json.dumps({"loadavg_end": os.getloadavg()}), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--hold"]:
        asyncio.run(_hold(int(sys.argv[2]), sys.argv[3], 0))
    elif sys.argv[1:2] == ["--bare"]:
        asyncio.run(_bare(int(sys.argv[2])))
    else:
        main()
