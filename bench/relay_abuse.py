"""Abuse benchmark: 20 honest clients of the relay with and without one abusive client, same run.

    python bench/relay_abuse.py [--runs 3] [--seconds 5] [--rate 20]
                                [--abuse bad_json,oversized,slow,silent] [--slow 100] [--silent 200]
                                [--limits header_timeout=5,idle_timeout=10] [--tree CHECKOUT]

Honest: ``--publishers`` (10) HTTP publishers, each with its own keep-alive connection, one
PUT at a time, paced at ``--rate`` messages/s, and ``--subscribers`` (10) WebSocket
subscribers (relay_fanout's light raw-socket subscribers, in their own process) to the same
topic. Measured: publishes answered 200 per second and their p50/p99 round trip; deliveries
per second (every subscriber must get every message) and publish-to-receive p50/p99; and a
``/v1/health`` probe every 100 ms (p99).

Abusive: ONE client (its own process), all of whose behaviours run at once — each an option:

* ``bad_json``: ``POST /`` bodies the relay must refuse (``1e400``, ``NaN``, deep nesting,
  broken JSON, a non-object, bad ``Actions``), two loops on keep-alive connections, as fast as
  the relay answers;
* ``oversized``: 1 MB bodies with and without a Content-Length, 100 KB ``X-Message`` headers;
* ``slow``: ``--slow`` connections each sending a request one byte every ``--trickle`` s
  (headers first, then a body it never finishes);
* ``silent``: ``--silent`` connections that send nothing.

A connection the relay closes is opened again (and counted): the abuser's pressure stays the
same, whatever timeouts the relay has. Scenarios ``clean`` and ``abuse`` alternate (ABBA...)
against the same relay, ``--runs`` times each; summary lines give medians and per-run ratios
against the targets (honest throughput >= 0.9 of clean, p99 < 2x clean). Everything is on
127.0.0.1, bounded in count and time, and stops by itself. One JSON object per line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.relay_fanout import CONFIG, TOPIC, _Counter, _pct, _WsSub  # noqa: E402
from tests.helpers import child_env  # noqa: E402
from tests.relay import Relay  # noqa: E402

BEHAVIOURS = ("bad_json", "oversized", "slow", "silent")
_BAD_BODIES = (
    b'{"topic":"abuse","message":1e400}',
    b'{"topic":"abuse","message":NaN}',
    b'{"topic":"abuse","title":-1e400,"message":"x"}',
    b'{"topic":"abuse","message":"x","extra":{"n":1e999}}',
    b'{"topic":"abuse","message":' + b"[" * 3000 + b"]" * 3000 + b"}",
    b'{"topic":"abuse","message":"x","actions":[{"action":"view","label":"a","url":1e400}]}',
    b'{"topic":"abuse", "message": "unterminated',
    b'["not", "an", "object"]',
    b"\xff\xfe not utf-8",
)


# --- the abusive client (its own process) -----------------------------------------------------


class _Stats:
    def __init__(self) -> None:
        self.status: Counter[str] = Counter()
        self.closed: Counter[str] = Counter()  # connections the relay closed, per behaviour
        self.opened: Counter[str] = Counter()


async def _answer(r: asyncio.StreamReader) -> str:
    """Read one HTTP response (status line, headers, Content-Length body); its status."""
    head = await r.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await r.readexactly(length)
    return head.split(b" ", 2)[1].decode()


async def _connect(port: int, name: str, st: _Stats) -> tuple[Any, Any] | None:
    """A new connection for behaviour ``name`` (counted), or None after a short pause."""
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        st.status["connect-failed"] += 1
        await asyncio.sleep(0.1)
        return None
    st.opened[name] += 1
    return r, w


async def _requests(port: int, name: str, make: Any, st: _Stats, stop: float) -> None:
    """Send ``make(i)``'s requests one after another on a keep-alive connection; reconnect
    whenever the relay closes it."""
    i = 0
    while time.monotonic() < stop:
        if (conn := await _connect(port, name, st)) is None:
            continue
        r, w = conn
        try:
            while time.monotonic() < stop:
                w.write(make(i))
                i += 1
                st.status[f"{name}:{await _answer(r)}"] += 1
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            st.closed[name] += 1
        finally:
            w.close()


def _bad_json(i: int) -> bytes:
    body = _BAD_BODIES[i % len(_BAD_BODIES)]
    if i % 10 == 9:  # the Actions header on a plain publish: broken and deeply nested
        actions = b"[" * 2000 if i % 20 == 9 else b"view, no url; http, x"
        return (b"PUT /abuse HTTP/1.1\r\nHost: x\r\nActions: " + actions +
                b"\r\nContent-Length: 1\r\n\r\nx")  # fmt: skip
    return (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip


def _oversized(i: int) -> bytes:
    big = b"x" * 1_000_000
    kind = i % 3
    if kind == 0:
        return b"PUT /abuse HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big)
    if kind == 1:  # no Content-Length: the relay finds the size only by reading
        chunk = b"%x\r\n%s\r\n" % (len(big), big)
        return (
            b"PUT /abuse HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunk
            + b"0\r\n\r\n"
        )
    return (
        b"PUT /abuse HTTP/1.1\r\nHost: x\r\nX-Message: "
        + b"m" * 100_000
        + b"\r\nContent-Length: 0\r\n\r\n"
    )


async def _hold(port: int, name: str, data: bytes, trickle: float, st: _Stats, stop: float) -> None:
    """One connection that sends ``data`` one byte per ``trickle`` s (nothing if empty) and
    then waits; opened again when the relay closes it."""
    while time.monotonic() < stop:
        if (conn := await _connect(port, name, st)) is None:
            continue
        r, w = conn
        try:
            for b in data:
                w.write(bytes((b,)))
                if await _closed_within(r, min(trickle, stop - time.monotonic())):
                    raise ConnectionResetError
                if time.monotonic() >= stop:
                    break
            else:
                if await _closed_within(r, stop - time.monotonic()):
                    raise ConnectionResetError
        except OSError:
            st.closed[name] += 1
        finally:
            w.close()


async def _closed_within(r: asyncio.StreamReader, seconds: float) -> bool:
    """True if the relay closes the connection within ``seconds`` (an answer such as a 408
    before the close is read and dropped)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, seconds)):
            while await r.read(65536):
                pass
            return True
    return False


async def _abuser(port: int, behaviours: list[str], n_slow: int, n_silent: int,
                  trickle: float, seconds: float) -> dict[str, Any]:  # fmt: skip
    st, stop = _Stats(), time.monotonic() + seconds
    jobs = []
    if "bad_json" in behaviours:
        jobs += [_requests(port, "bad_json", _bad_json, st, stop) for _ in range(2)]
    if "oversized" in behaviours:
        jobs.append(_requests(port, "oversized", _oversized, st, stop))
    slow = b"PUT /abuse HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"y" * 64
    if "slow" in behaviours:
        jobs += [_hold(port, "slow", slow, trickle, st, stop) for _ in range(n_slow)]
    if "silent" in behaviours:
        jobs += [_hold(port, "silent", b"", trickle, st, stop) for _ in range(n_silent)]
    print("ready", flush=True)
    await asyncio.gather(*jobs)
    return {"status": dict(st.status), "opened": dict(st.opened), "closed": dict(st.closed),
            "cpu_s": round(time.process_time(), 2)}  # fmt: skip


# --- honest subscribers (their own process) ----------------------------------------------------


async def _subscribers(port: int, n: int) -> dict[str, Any]:
    """``n`` WebSocket subscribers; they stop once they hold the total that stdin announces
    (the publishes the relay accepted times ``n``), or 10 s after it."""
    loop = asyncio.get_running_loop()
    counter = _Counter(2**62)
    subs = [_WsSub(counter) for _ in range(n)]
    for s in subs:
        await loop.create_connection(lambda s=s: s, "127.0.0.1", port)  # type: ignore[misc]
        await asyncio.wait_for(s.ready, 60)
    print("ready", flush=True)
    counter.expect = int(await asyncio.to_thread(sys.stdin.readline))
    if len(counter.lat) >= counter.expect:
        counter.done.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(counter.done.wait(), 10)
    for s in subs:
        if s.transport is not None:
            s.transport.close()
    return {"got": len(counter.lat), "lat": counter.lat, "last": counter.last}


# --- the parent: relay, honest publishers, health probe, scenarios -----------------------------


def _child(*args: str) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, env=child_env(), text=True)  # fmt: skip
    assert p.stdout is not None and p.stdout.readline().strip() == "ready", args
    return p


async def _publisher(port: int, tag: int, rate: float, seconds: float, out: dict[str, Any]) -> None:
    """One honest publisher: one PUT at a time on one keep-alive connection, on a fixed
    schedule of ``rate`` per second (a late answer is caught up afterwards, so a stall shows
    as a longer span, i.e. a lower rate, and as latency)."""
    import aiohttp

    url = f"http://127.0.0.1:{port}/{TOPIC}"
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.monotonic()
        k = 0
        while (due := start + k / rate) < start + seconds:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            t0 = time.monotonic()
            try:
                async with session.put(url, data=f"{time.time():.6f}|{tag}-{k}".encode()) as r:
                    await r.read()
                    ok = r.status == 200
            except aiohttp.ClientError:
                ok = False
            if ok:
                out["lat"].append(time.monotonic() - t0)
                out["last"] = max(out["last"], time.time())
            else:
                out["errors"] += 1
            k += 1


async def _health(port: int, stop: asyncio.Event, lat: list[float]) -> None:
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            await asyncio.wait_for(_answer(r), 10)
            w.close()
            lat.append(time.monotonic() - t0)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            lat.append(10.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


async def _honest(args: argparse.Namespace, port: int) -> tuple[dict[str, Any], float, list[float]]:
    pubs = {"lat": [], "errors": 0, "last": 0.0}
    health: list[float] = []
    stop = asyncio.Event()
    probe = asyncio.ensure_future(_health(port, stop, health))
    start = time.time()
    await asyncio.gather(*(_publisher(port, i, args.rate, args.seconds, pubs)
                           for i in range(args.publishers)))  # fmt: skip
    stop.set()
    await probe
    return pubs, start, health


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scenario(args: argparse.Namespace, relay: Relay, abuse: list[str]) -> dict[str, Any]:
    assert relay.proc is not None
    port, cpu0 = relay.port, _cpu_s(relay.proc.pid)
    subs = _child("--subscribers", str(port), str(args.subscribers))
    abuser = None
    if abuse:
        abuser = _child("--abuser", str(port), ",".join(abuse), str(args.slow), str(args.silent),
                        str(args.trickle), str(args.seconds + 2))  # fmt: skip
        time.sleep(1.0)  # its connections are open before the honest clients start
    pubs, start, health = asyncio.run(_honest(args, port))
    cpu = _cpu_s(relay.proc.pid) - cpu0
    expected = len(pubs["lat"]) * args.subscribers
    out, _ = subs.communicate(f"{expected}\n", timeout=60)
    got = json.loads(out.strip().splitlines()[-1])
    row: dict[str, Any] = {"scenario": "abuse" if abuse else "clean", "abuse": abuse}
    row.update(_figures(pubs, got, start, expected, args.seconds))
    row["health_p99_ms"] = round(_pct(health, 0.99) * 1000, 1)
    row["health_max_ms"] = round(max(health, default=float("nan")) * 1000, 1)
    row["relay_cpu_s"] = round(
        cpu, 2
    )  # while the honest clients ran (and the abuser's 1 s head start)
    if abuser is not None:
        out, _ = abuser.communicate(timeout=args.seconds + 60)
        row["abuser"] = json.loads(out.strip().splitlines()[-1])
    return row


def _figures(pubs: dict[str, Any], got: dict[str, Any], start: float, expected: int,
             seconds: float) -> dict[str, Any]:  # fmt: skip
    span = max(seconds, max(pubs["last"], got["last"] or start) - start)
    return {
        "publishes": len(pubs["lat"]), "publish_errors": pubs["errors"],
        "publish_per_s": round(len(pubs["lat"]) / span, 1),
        "publish_p50_ms": round(_pct(pubs["lat"], 0.50) * 1000, 2),
        "publish_p99_ms": round(_pct(pubs["lat"], 0.99) * 1000, 2),
        "deliveries": got["got"], "expected": expected,
        "delivery_per_s": round(got["got"] / span, 1),
        "delivery_p50_ms": round(_pct(got["lat"], 0.50) * 1000, 2),
        "delivery_p99_ms": round(_pct(got["lat"], 0.99) * 1000, 2),
    }  # fmt: skip


_RATES = ("publish_per_s", "delivery_per_s")
_P99S = ("publish_p99_ms", "delivery_p99_ms", "health_p99_ms")


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per scenario, and per run the abuse/clean ratio of each figure."""
    clean = [r for r in rows if r["scenario"] == "clean"]
    abuse = [r for r in rows if r["scenario"] == "abuse"]
    line: dict[str, Any] = {"summary": True, "runs": len(clean)}
    for f in (*_RATES, *_P99S, "publish_errors"):
        line[f"clean_{f}"] = statistics.median(r[f] for r in clean)
        line[f"abuse_{f}"] = statistics.median(r[f] for r in abuse)
        line[f"ratio_{f}"] = [round(a[f] / b[f], 2) if b[f] else None
                              for a, b in zip(abuse, clean, strict=True)]  # fmt: skip
    line["throughput_ratio_median"] = min(
        statistics.median(x for x in line[f"ratio_{f}"] if x is not None) for f in _RATES
    )
    line["p99_ratio_median"] = max(
        statistics.median(x for x in line[f"ratio_{f}"] if x is not None) for f in _P99S[:2]
    )
    line["target_throughput_met"] = line["throughput_ratio_median"] >= 0.9
    line["target_p99_met"] = line["p99_ratio_median"] < 2.0
    return line


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--publishers", type=int, default=10)
    ap.add_argument("--subscribers", type=int, default=10)
    ap.add_argument("--rate", type=float, default=20.0, help="messages/s per publisher")
    ap.add_argument("--abuse", default=",".join(BEHAVIOURS), help=f"any of {BEHAVIOURS}")
    ap.add_argument("--slow", type=int, default=100, help="slow connections")
    ap.add_argument("--silent", type=int, default=200, help="silent connections")
    ap.add_argument("--trickle", type=float, default=1.0, help="seconds between slow bytes")
    ap.add_argument("--limits", default="", help="extra [limits] lines, e.g. 'header_timeout=5'")
    ap.add_argument("--tree", type=Path, help="the checkout whose relay to run (default: this)")
    args = ap.parse_args()
    abuse = [b for b in args.abuse.split(",") if b]
    if unknown := set(abuse) - set(BEHAVIOURS):
        ap.error(f"--abuse: unknown {sorted(unknown)}")
    config = CONFIG + "".join(f"{kv.strip()}\n" for kv in args.limits.split(",") if kv.strip())
    print(json.dumps({"loadavg_start": os.getloadavg()}), flush=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        env = child_env(PYTHONPATH=str(args.tree.resolve())) if args.tree else None
        os.chdir(tmp)  # `python -m edge_relay` puts the working folder first on sys.path
        relay = Relay(Path(tmp) / "relay", config=config, env=env).start()
        try:
            for run in range(args.runs):
                order = ([], abuse) if run % 2 == 0 else (abuse, [])  # ABBA: drift cancels
                for which in order:
                    rows.append({"run": run, **scenario(args, relay, which)})
                    print(json.dumps(rows[-1]), flush=True)
        finally:
            code = relay.stop()
    print(json.dumps(_summary(rows)), flush=True)
    print(json.dumps({"loadavg_end": os.getloadavg(), "relay_exit": code}), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--abuser"]:
        port, behaviours, n_slow, n_silent, trickle, secs = sys.argv[2:8]
        out = asyncio.run(_abuser(int(port), behaviours.split(","), int(n_slow), int(n_silent),
                                  float(trickle), float(secs)))  # fmt: skip
        print(json.dumps(out), flush=True)
    elif sys.argv[1:2] == ["--subscribers"]:
        port, n = sys.argv[2:4]
        print(json.dumps(asyncio.run(_subscribers(int(port), int(n)))), flush=True)
    else:
        main()
