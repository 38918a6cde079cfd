"""Compression benchmark: a 1,000-message backlog from the relay, with and without it.

    .venv/bin/python bench/ws_compression.py [--messages 1000] [--runs 5] [--memory 200]
        [--stdlib-baseline | --baseline GIT-REV]

One relay process (this checkout) holds ``--messages`` typical monitoring messages (title,
a sentence with numbers, two tags, a priority: what scripts and Grafana send through ntfy).
Each run, alternating: a WebSocket client asks ``since=all`` once without permessage-deflate
(the same-run baseline) and once with it (the websockets client with the agent's settings,
``compression="deflate"``), and reads until the last message; then ``/json?poll=1`` once
without and once with ``Accept-Encoding: gzip``. Per side: the bytes received on the socket
after the handshake (the client's ``data_received``: what the wire carried), the relay's CPU
time (``/proc/<pid>/stat`` utime+stime, 10 ms ticks) and the client's (``process_time``:
inflate, framing and JSON parsing). Then the memory: the relay's RSS growth with
``--memory`` WebSocket subscribers that each received one message, fresh relays, with and
without deflate. One JSON object per line; the summary has medians and the ratios.
``--stdlib-baseline``: a second relay of this tree with ``EDGEPUSH_ZLIB=stdlib`` in the same
runs (``base_*``), to weigh zlib-ng (edge_relay.deflate) against stdlib zlib.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import baseline_tree, cpu, median, relay_config, rss_kib  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory  # noqa: E402

from tests.helpers import child_env  # noqa: E402
from tests.relay import Relay  # noqa: E402

CONFIG = relay_config(max_subscriptions=100000, send_queue=100000, retention_count=1000000)
TOPIC = "bench"


def typical(i: int) -> tuple[str, dict[str, str]]:
    host = f"web-{i % 17:02d}"
    text = f"Backup of {host} finished in {30 + i % 90} s: {1000 + 37 * i} files, 0 errors"
    return text, {"Title": f"backup {host}", "Tags": "floppy_disk,white_check_mark",
                  "Priority": str(1 + i % 5)}  # fmt: skip


def fill(relay: Relay, n: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=30)
    for i in range(n):
        text, headers = typical(i)
        conn.request("PUT", f"/{TOPIC}", text.encode(), headers)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
    conn.close()


class Counted(ClientConnection):
    """A websockets client connection that counts the bytes the socket delivered."""

    received = 0

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        super().data_received(data)


def _offer(window: int) -> dict[str, Any]:
    """connect() options: no compression (0), the agent's offer (15: websockets' default,
    no ``server_max_window_bits``), or the agent's offer asking the relay for a smaller
    window (``server_max_window_bits=N``, RFC 7692 7.1.2.1)."""
    if window == 0:
        return {"compression": None}
    if window == 15:
        return {"compression": "deflate"}
    factory = ClientPerMessageDeflateFactory(server_max_window_bits=window,
                                             compress_settings={"memLevel": 5})  # fmt: skip
    return {"compression": None, "extensions": [factory]}


async def _one_backlog(url: str, n: int, window: int) -> int:
    async with connect(url, **_offer(window), create_connection=Counted,
                       max_size=1 << 20) as ws:  # fmt: skip
        assert isinstance(ws, Counted)
        offered = str(ws.response.headers.get("Sec-WebSocket-Extensions"))
        assert ("permessage-deflate" in offered) == bool(window), offered
        start, got = ws.received, 0
        while got < n:
            if json.loads(await ws.recv())["event"] == "message":
                got += 1
        return ws.received - start


async def backlog_ws(relay: Relay, n: int, window: int, repeat: int) -> dict[str, Any]:
    """``repeat`` backlogs in a row (the relay's CPU is counted in 10 ms ticks); figures per
    backlog."""
    assert relay.proc is not None
    url = f"ws://127.0.0.1:{relay.port}/{TOPIC}/ws?since=all"
    relay0, client0, wall0 = cpu(relay.proc.pid), time.process_time(), time.perf_counter()
    wire = [await _one_backlog(url, n, window) for _ in range(repeat)]
    return {"scenario": "ws_backlog", "window": window, "messages": n,
            "wire_bytes": statistics.median(wire),
            "relay_cpu_s": round((cpu(relay.proc.pid) - relay0) / repeat, 4),
            "client_cpu_s": round((time.process_time() - client0) / repeat, 4),
            "wall_s": round((time.perf_counter() - wall0) / repeat, 4)}  # fmt: skip


def poll_json(relay: Relay, n: int, gzip_ok: bool) -> dict[str, Any]:
    assert relay.proc is not None
    conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=30)
    headers = {"Accept-Encoding": "gzip"} if gzip_ok else {}
    relay0, client0 = cpu(relay.proc.pid), time.process_time()
    conn.request("GET", f"/{TOPIC}/json?poll=1", headers=headers)
    resp = conn.getresponse()
    raw = resp.read()
    encoded = resp.getheader("Content-Encoding") == "gzip"
    body = zlib.decompress(raw, 31) if encoded else raw
    lines = body.count(b"\n")
    conn.close()
    assert encoded == gzip_ok and lines == n, (encoded, lines)
    return {"scenario": "json_poll", "gzip": gzip_ok, "messages": lines, "body_bytes": len(raw),
            "relay_cpu_s": round(cpu(relay.proc.pid) - relay0, 3),
            "client_cpu_s": round(time.process_time() - client0, 3)}  # fmt: skip


async def memory(tmp: Path, subs: int, window: int, env: dict[str, str] | None = None,
                 key: str = "") -> dict[str, Any]:  # fmt: skip
    """RSS growth of a fresh relay with ``subs`` WebSockets that each received a message."""
    relay = Relay(tmp / f"mem-{key}{window}", config=CONFIG, env=env).start()
    try:
        assert relay.proc is not None
        relay.publish(TOPIC, "warm-up")
        base = rss_kib(relay.proc.pid)
        url = f"ws://127.0.0.1:{relay.port}/{TOPIC}/ws"
        conns = [await connect(url, **_offer(window))
                 for _ in range(subs)]  # fmt: skip
        for ws in conns:
            await ws.recv()  # open
        text, headers = typical(7)
        await asyncio.to_thread(relay.publish, TOPIC, text, **headers)
        for ws in conns:
            await ws.recv()
        held = rss_kib(relay.proc.pid)
        for ws in conns:
            await ws.close()
    finally:
        relay.stop()
    return {"scenario": "memory", "relay": key or "this", "window": window, "subscribers": subs,
            "rss_base_kib": base, "rss_kib": held,
            "kib_per_subscriber": round((held - base) / subs, 1)}  # fmt: skip


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--memory", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=20, help="backlogs per sample")
    ap.add_argument("--windows", default="15", help="deflate windows to compare (9-15)")
    ap.add_argument(
        "--baseline",
        metavar="GIT-REV",
        help="also run the relay of this commit, same run (its ratios as base_*)",
    )
    ap.add_argument("--stdlib-baseline", action="store_true",
                    help="also run this relay with EDGEPUSH_ZLIB=stdlib (base_*): stdlib zlib "
                         "against zlib-ng, same run")  # fmt: skip
    args = ap.parse_args()
    windows = [int(w) for w in args.windows.split(",")]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        relays = {"": Relay(tmp / "relay", config=CONFIG).start()}
        if args.baseline:
            tree = baseline_tree(args.baseline, tmp / "baseline-tree")
            env = {**child_env(), "PYTHONPATH": str(tree)}
            relays["base_"] = Relay(tmp / "baseline", config=CONFIG, env=env).start()
        elif args.stdlib_baseline:
            env = child_env(EDGEPUSH_ZLIB="stdlib")
            relays["base_"] = Relay(tmp / "baseline", config=CONFIG, env=env).start()
        rows: dict[str, list[dict[str, Any]]] = {k: [] for k in relays}
        try:
            for relay in relays.values():
                await asyncio.to_thread(fill, relay, args.messages)
                await backlog_ws(relay, args.messages, 0, 2)  # warm-up: pages in the store
            for run in range(args.runs):
                for key, relay in relays.items():
                    await _run(relay, args, windows, run, rows[key], key)
        finally:
            for relay in relays.values():
                relay.stop()
        mem = {w: await memory(tmp, args.memory, w) for w in (0, *windows)}
        base_mem = mem
        if args.stdlib_baseline:
            env = child_env(EDGEPUSH_ZLIB="stdlib")
            base_mem = {w: await memory(tmp, args.memory, w, env, "base_") for w in windows}
            base_mem[0] = mem[0]
        for m in (*mem.values(), *(base_mem[w] for w in windows if base_mem is not mem)):
            print(json.dumps(m), flush=True)
    out = summary(rows[""], args, windows, mem)
    if args.baseline or args.stdlib_baseline:
        base = summary(rows["base_"], args, windows, base_mem)
        out["baseline"] = args.baseline or "EDGEPUSH_ZLIB=stdlib"
        out.update({f"base_{k}": v for k, v in base.items() if k.startswith(("w", "ws_"))})
    print(json.dumps(out), flush=True)


async def _run(relay: Relay, args: argparse.Namespace, windows: list[int], run: int,
               rows: list[dict[str, Any]], key: str) -> None:  # fmt: skip
    """One run against one relay: the backlogs (order alternating per run), then the polls."""
    order = [0, *windows]
    for window in order if run % 2 == 0 else order[::-1]:
        rows.append(await backlog_ws(relay, args.messages, window, args.repeat))
        print(json.dumps({**rows[-1], "run": run, "relay": key or "this"}), flush=True)
    for gz in (False, True):
        rows.append(await asyncio.to_thread(poll_json, relay, args.messages, gz))
        print(json.dumps({**rows[-1], "run": run, "relay": key or "this"}), flush=True)


def summary(rows: list[dict[str, Any]], args: argparse.Namespace, windows: list[int],
            mem: dict[int, dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """Medians, and per window the ratios against the same run's uncompressed backlogs."""
    ws = {w: [r for r in rows if r["scenario"] == "ws_backlog" and r["window"] == w]
          for w in (0, *windows)}  # fmt: skip
    raw = [r for r in rows if r["scenario"] == "json_poll" and not r["gzip"]]
    gz = [r for r in rows if r["scenario"] == "json_poll" and r["gzip"]]
    plain = ws[0]

    def total(rs: list[dict[str, Any]]) -> float:
        return float(statistics.median(r["relay_cpu_s"] + r["client_cpu_s"] for r in rs))

    out: dict[str, Any] = {
        "summary": True, "messages": args.messages, "runs": args.runs, "repeat": args.repeat,
        "ws_bytes_plain": median(plain, "wire_bytes"),
        "ws_relay_cpu_s_plain": median(plain, "relay_cpu_s"),
        "ws_client_cpu_s_plain": median(plain, "client_cpu_s"),
        "poll_bytes_plain": median(raw, "body_bytes"),
        "poll_bytes_gzip": median(gz, "body_bytes"),
        "poll_bytes_ratio": round(median(raw, "body_bytes") / median(gz, "body_bytes"), 2),
        "poll_relay_cpu_s": [median(raw, "relay_cpu_s"), median(gz, "relay_cpu_s")],
        "memory_kib_per_subscriber_plain": mem[0]["kib_per_subscriber"],
    }  # fmt: skip
    for w in windows:
        rs = ws[w]
        out[f"w{w}"] = {
            "ws_bytes": median(rs, "wire_bytes"),
            "ws_bytes_ratio": round(median(plain, "wire_bytes") / median(rs, "wire_bytes"), 2),
            "relay_cpu_s": median(rs, "relay_cpu_s"),
            "client_cpu_s": median(rs, "client_cpu_s"),
            "cpu_ratio_relay": round(median(rs, "relay_cpu_s")
                                     / max(0.001, median(plain, "relay_cpu_s")), 2),
            "cpu_ratio_relay_per_run": [round(a["relay_cpu_s"] / max(0.001, b["relay_cpu_s"]), 2)
                                        for a, b in zip(rs, plain, strict=True)],
            "cpu_ratio_total": round(total(rs) / max(0.001, total(plain)), 2),
            "memory_kib_per_subscriber": mem[w]["kib_per_subscriber"],
        }  # fmt: skip
    return out


if __name__ == "__main__":
    asyncio.run(main())
