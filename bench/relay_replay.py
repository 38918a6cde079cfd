"""The relay's cost of a backlog replay: N devices come back and each asks ``since=all``.

    .venv/bin/python bench/relay_replay.py [--subscribers 20] [--messages 1000] [--rounds 5]
                                           [--compress both|on|off] [--baseline GIT-REV]

One relay (this checkout) holds ``--messages`` typical notices (~230-byte envelopes, as
bench/edge_latency.py's); ``--subscribers`` raw WebSocket clients open at once with
``since=all`` (offering permessage-deflate with ``--compress on``) and count frames until each
has the whole backlog. Measured: the relay's CPU seconds meanwhile (/proc, user + system),
per message delivered, and the time until the last client had it all. The clients are raw
asyncio protocols that only cut frames (no inflate, no JSON), in this process, pinned to core 1;
the relays to core 0 (``--pin none``: off). ``--baseline REV``: a second relay from that
commit's tree (git archive) with the same messages, measured in alternating rounds of the same
run. One JSON object per line; the last ones are the medians and per-round ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import baseline_tree, cpu, relay_config  # noqa: E402

from tests.helpers import child_env  # noqa: E402
from tests.relay import Relay  # noqa: E402

CONFIG = relay_config(max_subscriptions=100000, send_queue=100000)
TOPIC = "bench"
_KEY = "ZWRnZXB1c2gtYmVuY2gtMQ=="


def typical(i: int) -> tuple[bytes, dict[str, str]]:
    host = f"web-{i % 17:02d}"
    text = f"Backup of {host} finished in {30 + i % 90} s: {1000 + 37 * i} files, 0 errors"
    return text.encode(), {"Title": f"backup {host}", "Priority": str(1 + i % 5),
                           "Tags": "floppy_disk,white_check_mark"}  # fmt: skip


def fill(relay: Relay, n: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=30)
    try:
        for i in range(n):
            body, headers = typical(i)
            conn.request("PUT", f"/{TOPIC}", body, headers)
            resp = conn.getresponse()
            assert resp.status == 200, resp.read()
            resp.read()
    finally:
        conn.close()


class Client(asyncio.Protocol):
    """One device: the upgrade, then frames counted (the first is ``open``)."""

    def __init__(self, expect: int, compress: bool) -> None:
        self.expect = expect + 1
        self.compress = compress
        self.frames = 0
        self.buf = bytearray()
        self.upgraded = False
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        ext = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if self.compress else ""
        transport.write(f"GET /{TOPIC}/ws?since=all HTTP/1.1\r\nHost: x\r\nUpgrade: websocket"
                        f"\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\n"
                        f"Sec-WebSocket-Version: 13\r\n{ext}\r\n".encode())  # fmt: skip

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"closed after {self.frames} frames"))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos, size = 0, len(buf)
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            assert buf.startswith(b"HTTP/1.1 101"), bytes(buf[:200])
            pos, self.upgraded = end + 4, True
        while size - pos >= 2:
            n, head = buf[pos + 1] & 127, 2
            if n >= 126:
                head = 4 if n == 126 else 10
                if size - pos < head:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + head], "big")
            if pos + head + n > size:
                break
            pos += head + n
            self.frames += 1
        del buf[:pos]
        if self.frames >= self.expect and not self.done.done():
            self.done.set_result(time.monotonic())


async def replay(relay: Relay, args: argparse.Namespace, compress: bool) -> dict[str, Any]:
    assert relay.proc is not None
    loop = asyncio.get_running_loop()
    cpu0, t0 = cpu(relay.proc.pid), time.monotonic()
    clients = []
    for _ in range(args.subscribers):
        _, c = await loop.create_connection(lambda: Client(args.messages, compress),
                                            "127.0.0.1", relay.port)  # fmt: skip
        clients.append(c)
    async with asyncio.timeout(120):
        done = max(await asyncio.gather(*(c.done for c in clients)))
    await asyncio.sleep(0.05)  # the relay's last writes are counted in its CPU
    used = cpu(relay.proc.pid) - cpu0
    for c in clients:
        c.transport.close()
    delivered = args.subscribers * args.messages
    return {"backlog_s": round(done - t0, 3), "relay_cpu_s": round(used, 3),
            "relay_us_per_message": round(used / delivered * 1e6, 1)}  # fmt: skip


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subscribers", type=int, default=20)
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--compress", choices=("on", "off", "both"), default="both")
    p.add_argument("--baseline", metavar="GIT-REV")
    p.add_argument("--pin", default="0:1" if (os.cpu_count() or 1) >= 2 else "none")
    args = p.parse_args()
    pins = None if args.pin == "none" else [{int(c)} for c in args.pin.split(":")]
    print(json.dumps({"loadavg_start": os.getloadavg(), "pin": args.pin}), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"relay": child_env()}
        if args.baseline:
            tree = baseline_tree(args.baseline, Path(tmp) / "baseline-tree")
            trees["baseline"] = child_env(PYTHONPATH=str(tree))
        relays = {k: Relay(Path(tmp) / k, config=CONFIG, env=env).start()
                  for k, env in trees.items()}  # fmt: skip
        try:
            for r in relays.values():
                assert r.proc is not None
                if pins:
                    os.sched_setaffinity(r.proc.pid, pins[0])
                fill(r, args.messages)
            if pins:
                os.sched_setaffinity(0, pins[1])
            modes = {"on": [True], "off": [False], "both": [False, True]}[args.compress]
            for compress in modes:
                rows: dict[str, list[dict[str, Any]]] = {k: [] for k in relays}
                for rnd in range(args.rounds):
                    for name, r in relays.items():
                        out = await replay(r, args, compress)
                        out.update(server=name, round=rnd, compress=compress)
                        print(json.dumps(out), flush=True)
                        rows[name].append(out)
                _summary(rows, args, compress)
        finally:
            for r in relays.values():
                r.stop()
    print(json.dumps({"loadavg_end": os.getloadavg()}), flush=True)


def _summary(rows: dict[str, list[dict[str, Any]]], args: argparse.Namespace, compress: bool
             ) -> None:  # fmt: skip
    line: dict[str, Any] = {"summary": True, "compress": compress,
                            "subscribers": args.subscribers, "messages": args.messages}  # fmt: skip
    for name, rs in rows.items():
        for f in ("backlog_s", "relay_cpu_s", "relay_us_per_message"):
            line[f"{name}_{f}"] = statistics.median(r[f] for r in rs)
    if "baseline" in rows:
        line["cpu_vs_baseline_per_round"] = [
            round(a["relay_cpu_s"] / max(b["relay_cpu_s"], 1e-9), 2)
            for a, b in zip(rows["relay"], rows["baseline"], strict=True)
        ]
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
