"""Fan-out benchmark: one publisher, N subscribers, the relay (WebSocket) vs mosquitto (MQTT).

    /work/venv/bin/python bench/relay_fanout.py [--sizes 100,1000] [--clients 4]

For each N: the same harness shape against both servers in the same run — N subscribers
spread over ``--clients`` client processes, one publisher, (1) a burst of messages sent as
fast as the publisher can (deliveries/s = N*M / time until the last delivery) and (2) a paced
run at a rate both sustain (publish-to-receive latency p50/p99). The relay's publisher uses
HTTP PUT on one keep-alive connection; mosquitto's publishes QoS 1 and waits for each PUBACK;
subscribers are QoS 0 on MQTT (the relay's fan-out has no per-subscriber ack either).
Then the RSS of a fresh relay with 1,000 and 5,000 idle WebSocket subscribers. One JSON per line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import child_env  # noqa: E402
from tests.mosquitto import Mosquitto  # noqa: E402
from tests.relay import Relay  # noqa: E402

CONFIG = """keepalive = 300
[limits]
publish_burst = 10000000
publish_rate = 10000000.0
max_subscriptions = 100000
send_queue = 100000
message_size = 65536
"""
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


# --- client process: N subscribers, report latencies ------------------------------------------


async def _client(kind: str, port: int, n: int, expect: int, tag: str) -> dict[str, Any]:
    lat: list[float] = []
    first_last = [0.0, 0.0]
    done = asyncio.Event()
    got = 0

    def record(payload: str) -> None:
        nonlocal got
        now = time.time()
        sent = float(payload.split("|", 1)[0])
        lat.append(now - sent)
        got += 1
        first_last[0] = first_last[0] or now
        first_last[1] = now
        if got >= expect * n:
            done.set()

    tasks = []
    conns: list[Any] = []
    if kind == "relay":
        import aiohttp

        # limit=0: every WebSocket holds a connection; the default pool of 100 would deadlock
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        conns = [await session.ws_connect(f"http://127.0.0.1:{port}/{TOPIC}/ws") for _ in range(n)]
        for ws in conns:
            await ws.receive()  # open

        async def read_ws(ws: Any) -> None:
            async for msg in ws:
                ev = json.loads(msg.data)
                if ev["event"] == "message":
                    record(ev["message"])

        tasks = [asyncio.create_task(read_ws(ws)) for ws in conns]
    else:
        streams = []
        for i in range(n):
            r, w = await _mqtt_connect(port, f"{tag}-{i}")
            w.write(_packet(0x82, struct.pack("!H", 1) + _mqtt_str(TOPIC) + b"\x00"))
            head, _ = await _read_packet(r)
            assert head >> 4 == 9, "no SUBACK"
            streams.append((r, w))

        async def read_mqtt(r: asyncio.StreamReader) -> None:
            while True:
                head, body = await _read_packet(r)
                if head >> 4 == 3:
                    tlen = struct.unpack("!H", body[:2])[0]
                    record(body[2 + tlen :].decode())

        tasks = [asyncio.create_task(read_mqtt(r)) for r, _ in streams]
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # the parent says: measure from now
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), 120)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if kind == "relay":
        for ws in conns:
            await ws.close()
        await session.close()
    return {"got": got, "lat": lat, "first": first_last[0], "last": first_last[1]}


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


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


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
        "p50_ms": round(_pct(lat, 0.50) * 1000, 2), "p99_ms": round(_pct(lat, 0.99) * 1000, 2),
    }  # fmt: skip


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


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
        base = _rss_kib(relay.proc.pid)
        procs = []
        for _ in range(clients):
            cmd = [sys.executable, __file__, "--hold", str(relay.port), str(n // clients)]
            procs.append(subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env(), text=True
            ))  # fmt: skip
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        _, health = relay.request("GET", "/v1/health")
        held = _rss_kib(relay.proc.pid)
        for p in procs:
            p.communicate("done\n", timeout=120)
    finally:
        relay.stop()
    return {"server": "relay", "idle_subscribers": health["subscribers"], "rss_base_kib": base,
            "rss_kib": held, "kib_per_subscriber": round((held - base) / max(1, n), 2)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,1000")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--idle", default="1000,5000")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        relay = Relay(Path(tmp) / "relay", config=CONFIG).start()
        broker = Mosquitto(Path(tmp) / "mqtt", persistence=False).start()
        try:
            for n in (int(x) for x in args.sizes.split(",")):
                m_burst = max(20, 20_000 // n)
                rate = max(2.0, 5_000 / n)  # 5,000 deliveries/s offered: both sustain it
                for kind, port in (("relay", relay.port), ("mosquitto", broker.port)):
                    print(
                        json.dumps(scenario(kind, port, n, args.clients, m_burst, None)), flush=True
                    )
                    r = scenario(kind, port, n, args.clients, int(rate * 3), rate)
                    print(json.dumps(r), flush=True)
            for n in (int(x) for x in args.idle.split(",")):
                print(json.dumps(idle_rss(Path(tmp), n, args.clients)), flush=True)
        finally:
            relay.stop()
            broker.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        kind, port, n, expect, tag = sys.argv[2:7]
        print(json.dumps(asyncio.run(_client(kind, int(port), int(n), int(expect), tag))))
    elif len(sys.argv) > 1 and sys.argv[1] == "--hold":
        asyncio.run(_hold(int(sys.argv[2]), int(sys.argv[3])))
    else:
        main()
