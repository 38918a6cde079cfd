"""Fan-out benchmark: one publisher, N subscribers, the relay (WebSocket) vs mosquitto (MQTT).

    .venv/bin/python bench/relay_fanout.py [--sizes 100,1000] [--clients 2] [--runs 3]
                                            [--baseline GIT-REV]

For each N: the same harness shape against both servers in the same run — N subscribers
spread over ``--clients`` client processes, one publisher, (1) a burst of messages sent as
fast as the publisher can (deliveries/s = N*M / time until the last delivery) and (2) a paced
run at a rate both sustain (publish-to-receive latency p50/p99). The relay's publisher uses
HTTP PUT on one keep-alive connection; mosquitto's publishes QoS 1 and waits for each PUBACK;
subscribers are QoS 0 on MQTT (the relay's fan-out has no per-subscriber ack either). The
subscribers are raw asyncio protocols doing the same minimal work per message for both servers
(see the client section), so the harness costs little of the shared CPU. The whole set is run
``--runs`` times against the same two servers; summary lines give medians and per-run ratios.
Then the RSS of a fresh relay with 1,000 and 5,000 idle WebSocket subscribers. One JSON per line.

``--baseline REV``: a third server in the same run, the relay as it was at that commit (its
tree extracted with ``git archive`` into the temp folder; same config, same harness), so a
refactor is measured against what it replaced on the same box at the same time: the summary
adds ``vs_baseline_per_run`` (this checkout's relay / the baseline's, per run) and its median.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import baseline_tree, pct, relay_config, rss_kib, summary  # noqa: E402

from tests.helpers import child_env  # noqa: E402
from tests.mosquitto import Mosquitto  # noqa: E402
from tests.relay import Relay  # noqa: E402

CONFIG = relay_config(max_subscriptions=100000, send_queue=100000, message_size=65536)
TOPIC = "bench"


# --- a minimal MQTT 3.1.1 subscriber / publisher on asyncio streams (bench only) -------------


def _mqtt_str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _packet(kind: int, body: bytes) -> bytes:
    n, enc = len(body), bytearray()
    while True:
        byte, n = n % 128, n // 128
        enc.append(byte | (0x80 if n else 0))
        if not n:
            return bytes([kind]) + bytes(enc) + body


async def _read_packet(r: asyncio.StreamReader) -> tuple[int, bytes]:
    head = (await r.readexactly(1))[0]
    mult, length = 1, 0
    while True:
        b = (await r.readexactly(1))[0]
        length += (b & 127) * mult
        mult *= 128
        if not b & 128:
            break
    return head, await r.readexactly(length)


async def _mqtt_connect(port: int, cid: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    body = _mqtt_str("MQTT") + bytes([4, 2]) + struct.pack("!H", 300) + _mqtt_str(cid)
    w.write(_packet(0x10, body))
    head, _ = await _read_packet(r)
    assert head >> 4 == 2, "no CONNACK"
    return r, w


# --- client process: N subscribers on raw asyncio protocols, report latencies -----------------
#
# The subscribers must cost as little CPU as possible, so the harness measures the server and
# not itself: one asyncio.Protocol per connection, the receive time taken once per read (not per
# message), frames cut from a bytearray, and per message only the send time is parsed (the bytes
# between the payload's start marker and '|'); no JSON decode, no per-message task. The relay's
# and mosquitto's clients do the same work per message: frame header, one find, one float().

_WS_KEY = "ZWRnZXB1c2gtYmVuY2gtMQ=="  # any 16 bytes, base64; the bench never checks the accept
_WS_MARK = b'"message":"'


class _Counter:
    """Shared by one client process's connections: latencies and the first/last receive."""

    def __init__(self, expect: int) -> None:
        self.lat: list[float] = []
        self.expect = expect
        self.first = self.last = 0.0
        self.done = asyncio.Event()

    def add(self, now: float, sends: list[float]) -> None:
        lat = self.lat
        for sent in sends:
            lat.append(now - sent)
        self.first = self.first or now
        self.last = now
        if len(lat) >= self.expect:
            self.done.set()


class _Sub(asyncio.Protocol):
    """Base: buffer bytes, hand complete frames to ``frames`` with the time of the read."""

    def __init__(self, counter: _Counter) -> None:
        self.counter = counter
        self.buf = bytearray()
        self.ready = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.hello(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before ready: {exc}"))

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.buf += data
        sends: list[float] = []
        used = self.frames(sends)
        if used:
            del self.buf[:used]
        if sends:
            self.counter.add(now, sends)

    def hello(self, transport: asyncio.Transport) -> None:
        raise NotImplementedError

    def frames(self, sends: list[float]) -> int:
        raise NotImplementedError


class _WsSub(_Sub):
    """RFC 6455 client: upgrade request, then unmasked server text frames."""

    def hello(self, transport: asyncio.Transport) -> None:
        transport.write(
            f"GET /{TOPIC}/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {_WS_KEY}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    upgraded = False

    def frames(self, sends: list[float]) -> int:
        buf, pos = self.buf, 0
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return 0
            assert buf.startswith(b"HTTP/1.1 101"), bytes(buf[:80])
            pos, self.upgraded = end + 4, True
        size = len(buf)
        while size - pos >= 2:
            n, head = buf[pos + 1] & 127, 2
            if n == 126:
                if size - pos < 4:
                    break
                n, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            start, end = pos + head, pos + head + n
            if end > size:
                break
            at = buf.find(_WS_MARK, start, end)
            if at >= 0:
                at += len(_WS_MARK)
                sends.append(float(buf[at : buf.index(b"|", at, end)]))
            elif not self.ready.done():
                self.ready.set_result(None)  # the "open" event: subscribed
            pos = end
        return pos


class _MqttSub(_Sub):
    """MQTT 3.1.1 client: CONNECT + SUBSCRIBE (QoS 0) at once, then PUBLISH packets."""

    def __init__(self, counter: _Counter, cid: str) -> None:
        super().__init__(counter)
        self.cid = cid

    def hello(self, transport: asyncio.Transport) -> None:
        body = _mqtt_str("MQTT") + bytes([4, 2]) + struct.pack("!H", 300) + _mqtt_str(self.cid)
        sub = _packet(0x82, struct.pack("!H", 1) + _mqtt_str(TOPIC) + b"\x00")
        transport.write(_packet(0x10, body) + sub)

    def frames(self, sends: list[float]) -> int:
        buf, pos, size = self.buf, 0, len(self.buf)
        while size - pos >= 2:
            length, mult, i = 0, 1, pos + 1
            while i < size:
                b = buf[i]
                length += (b & 127) * mult
                mult *= 128
                i += 1
                if not b & 128:
                    break
            else:
                break
            end = i + length
            if end > size:
                break
            kind = buf[pos] >> 4
            if kind == 3:
                at = i + 2 + int.from_bytes(buf[i : i + 2], "big")
                sends.append(float(buf[at : buf.index(b"|", at, end)]))
            elif kind == 9 and not self.ready.done():
                self.ready.set_result(None)  # SUBACK: subscribed
            pos = end
        return pos


async def _client(kind: str, port: int, n: int, expect: int, tag: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    counter = _Counter(expect * n)
    gate = asyncio.Semaphore(64)  # connect in waves: the servers' listen backlogs are finite

    async def connect(i: int) -> _Sub:
        proto: _Sub = _WsSub(counter) if kind == "relay" else _MqttSub(counter, f"{tag}-{i}")
        async with gate:
            await loop.create_connection(lambda: proto, "127.0.0.1", port)
            await asyncio.wait_for(proto.ready, 60)
        return proto

    subs = await asyncio.gather(*(connect(i) for i in range(n)))
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # the parent says: measure from now
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(counter.done.wait(), 120)
    for s in subs:
        if s.transport is not None:
            s.transport.close()
    return {"got": len(counter.lat), "lat": counter.lat, "first": counter.first,
            "last": counter.last}  # fmt: skip


# --- parent: servers, publishers, aggregation -------------------------------------------------


class Publisher:
    """One publisher with up to ``window`` publishes in flight (HTTP: that many keep-alive
    connections; MQTT: that many unacknowledged QoS 1 PUBLISHes on one connection)."""

    def __init__(self, kind: str, port: int, window: int = 16) -> None:
        self.kind, self.port = kind, port
        self.sem = asyncio.Semaphore(window)
        self.pending: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Publisher:
        if self.kind == "relay":
            import aiohttp

            self.session = aiohttp.ClientSession()
        else:
            self.r, self.w = await _mqtt_connect(self.port, "bench-pub")
            self.acks = asyncio.create_task(self._read_acks())
        self.mid = 0
        return self

    async def _read_acks(self) -> None:
        while True:
            head, _ = await _read_packet(self.r)
            assert head >> 4 == 4, "no PUBACK"
            self.sem.release()

    async def __aexit__(self, *exc: object) -> None:
        if self.kind == "relay":
            await asyncio.gather(*self.pending)
            await self.session.close()
        else:
            for _ in range(16):
                await self.sem.acquire()  # every PUBACK is in
            self.acks.cancel()
            self.w.close()

    async def send(self, text: str) -> None:
        await self.sem.acquire()
        if self.kind == "relay":
            task = asyncio.create_task(self._put(text))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
        else:
            self.mid = self.mid % 65535 + 1
            body = _mqtt_str(TOPIC) + struct.pack("!H", self.mid) + text.encode()
            self.w.write(_packet(0x32, body))
            await self.w.drain()

    async def _put(self, text: str) -> None:
        try:
            url = f"http://127.0.0.1:{self.port}/{TOPIC}"
            async with self.session.put(url, data=text.encode()) as resp:
                assert resp.status == 200
        finally:
            self.sem.release()


def _spawn_clients(kind: str, port: int, n: int, clients: int, expect: int) -> list[Any]:
    procs = []
    for c in range(clients):
        share = n // clients + (1 if c < n % clients else 0)
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "--client", kind, str(port), str(share), str(expect),
             f"c{c}-{time.monotonic_ns()}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env(), text=True,
        ))  # fmt: skip
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return procs


def _collect(procs: list[Any]) -> list[dict[str, Any]]:
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=180)
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


async def _publish(kind: str, port: int, m: int, rate: float | None) -> float:
    async with Publisher(kind, port) as pub:
        start = time.time()
        for i in range(m):
            if rate:
                await asyncio.sleep(max(0.0, start + i / rate - time.time()))
            await pub.send(f"{time.time():.6f}|{i}")
        return start


def scenario(
    kind: str, port: int, n: int, clients: int, m: int, rate: float | None
) -> dict[str, Any]:
    procs = _spawn_clients(kind, port, n, clients, m)
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    start = asyncio.run(_publish(kind, port, m, rate))
    res = _collect(procs)
    lat = [x for r in res for x in r["lat"]]
    got = sum(r["got"] for r in res)
    last = max(r["last"] for r in res)
    return {
        "server": kind, "subscribers": n, "messages": m, "rate": rate or "burst",
        "deliveries": got, "expected": n * m,
        "deliveries_per_s": round(got / max(1e-9, last - start)),
        "p50_ms": round(pct(lat, 0.50) * 1000, 2), "p99_ms": round(pct(lat, 0.99) * 1000, 2),
    }  # fmt: skip


async def _hold(port: int, n: int) -> None:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        conns = []
        for _ in range(n):
            conns.append(await s.ws_connect(f"http://127.0.0.1:{port}/{TOPIC}/ws"))
            await conns[-1].receive()
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        for ws in conns:
            await ws.close()


def idle_rss(tmp: Path, n: int, clients: int) -> dict[str, Any]:
    """A fresh relay (so earlier scenarios' peaks are not in its base), then N idle sockets."""
    relay = Relay(tmp / f"idle{n}", config=CONFIG).start()
    try:
        relay.publish(TOPIC, "warm-up")  # code paths loaded before the base is taken
        assert relay.proc is not None
        base = rss_kib(relay.proc.pid)
        procs = []
        for _ in range(clients):
            cmd = [sys.executable, __file__, "--hold", str(relay.port), str(n // clients)]
            procs.append(subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env(), text=True
            ))  # fmt: skip
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        _, health = relay.request("GET", "/v1/health")
        held = rss_kib(relay.proc.pid)
        for p in procs:
            p.communicate("done\n", timeout=120)
    finally:
        relay.stop()
    return {"server": "relay", "idle_subscribers": health["subscribers"], "rss_base_kib": base,
            "rss_kib": held, "kib_per_subscriber": round((held - base) / max(1, n), 2)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,1000")
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--idle", default="1000,5000")
    ap.add_argument("--baseline", metavar="GIT-REV", help="also run the relay of this commit")
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    print(json.dumps({"loadavg_start": os.getloadavg()}), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        relay = Relay(Path(tmp) / "relay", config=CONFIG).start()
        broker = Mosquitto(Path(tmp) / "mqtt", persistence=False).start()
        servers = [("relay", "relay", relay.port), ("mosquitto", "mosquitto", broker.port)]
        base: Relay | None = None
        if args.baseline:
            tree = baseline_tree(args.baseline, Path(tmp) / "baseline-tree")
            env = {**child_env(), "PYTHONPATH": str(tree)}
            base = Relay(Path(tmp) / "baseline", config=CONFIG, env=env).start()
            servers.append(("baseline", "relay", base.port))
            print(json.dumps({"baseline": args.baseline}), flush=True)
        try:
            for run in range(args.runs):
                for n in (int(x) for x in args.sizes.split(",")):
                    m_burst = max(20, 50_000 // n)  # long enough that one stall is not the result
                    rate = max(2.0, 5_000 / n)  # 5,000 deliveries/s offered: both sustain it
                    for label, kind, port in servers:
                        for m, r in ((m_burst, None), (int(rate * 3), rate)):
                            row = {"run": run, **scenario(kind, port, n, args.clients, m, r)}
                            row["server"] = label
                            rows.append(row)
                            print(json.dumps(row), flush=True)
            for line in summary(rows, "deliveries_per_s", ("deliveries_per_s", "p50_ms", "p99_ms")):
                print(json.dumps(line), flush=True)
            print(json.dumps({"loadavg_end": os.getloadavg()}), flush=True)
            for n in (int(x) for x in args.idle.split(",") if x):
                print(json.dumps(idle_rss(Path(tmp), n, args.clients)), flush=True)
        finally:
            relay.stop()
            broker.stop()
            if base is not None:
                base.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        kind, port, n, expect, tag = sys.argv[2:7]
        print(json.dumps(asyncio.run(_client(kind, int(port), int(n), int(expect), tag))))
    elif len(sys.argv) > 1 and sys.argv[1] == "--hold":
        asyncio.run(_hold(int(sys.argv[2]), int(sys.argv[3])))
    else:
        main()
