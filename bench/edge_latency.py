"""Does an edge relay make devices faster? Agents straight to the cloud vs through a LAN relay.

"The cloud" is a mosquitto broker behind a TCP proxy (in its own process, bench/_wan.py) that
models the site's internet line and counts the bytes that cross it: one link per direction,
shared by every connection, with a bandwidth (``--bandwidth DOWN/UP`` in Mbit/s, default
``20/5``, a typical home DSL or 4G line; ``0``: unlimited, the model before it) and a one-way
delay (``--delay``, default 40 ms, pipelined). In the same run:

* **direct** (the baseline): N agents, each with its own MQTT session across the WAN link;
* **relay**: one ``edge-relay`` process holding the one upstream session across the WAN link,
  and N agents subscribed to it over the LAN (WebSocket, no added delay).

Each scenario, on a fresh cloud broker of its own: the agents connect once (creating their
sessions), go offline, 1,000 messages are published to the cloud, then all agents reconnect at
once. Measured: (a) seconds from the reconnect until every agent has stored all 1,000 (its
store's count, the same commit path as ``pushagent run``); (b) bytes and message copies the
cloud sent across the WAN link per delivered message. Repeated ``--rounds`` times; medians reported.

The agents are the agent's real transports + stores (MqttTransport / WsTransport and Store),
without the notifier: what is measured is delivery into the store. Real devices do not share
one interpreter, so each scenario's agents are spread round-robin over ``--workers`` processes
(default 2, one per core of the reference machine; the same for both scenarios). Before this
option all agents ran in the benchmark's own process, where 20 agents queue for one GIL.

``--pin 0:1`` (the default on 2+ cores; ``os.sched_setaffinity``, as ``taskset``): the
broker, the WAN proxy, the relay and this process on core 0, the agents' worker processes on
core 1, so the 20-agent figure measures the link, not the agents and the servers queueing for
the same core. ``--compress both`` (default) runs every comparison without and then with
compression: the agents' WebSocket permessage-deflate and the relay's ``compress``, and the
cloud publisher's payloads through the MQTT zstd codec (which leaves envelopes below 512 bytes
as they are). The messages are typical monitoring notices (~230 bytes as envelopes).

    python bench/edge_latency.py [--agents 20 1] [--messages 1000] [--delay 0.040] [--rounds 3]
                                 [--bandwidth 20/5 [0 ...]] [--workers 2] [--pin 0:1|none]
                                 [--compress both|on|off]

Several ``--bandwidth`` values run the whole comparison once per link (``--bandwidth 20/5 0``:
the default line, then unlimited).

Prints one JSON object per scenario and a final comparison object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import cpu  # noqa: E402
from _wan import WanLink, mbit  # noqa: E402

from agent import config  # noqa: E402
from agent.config import AgentConfig, MqttConfig, WsConfig  # noqa: E402
from agent.store import Store  # noqa: E402
from agent.transports import (  # noqa: E402
    Batch,
    Transport,
    mqtt_codec,
)
from agent.transports.mqtt import MqttTransport  # noqa: E402
from agent.transports.ws import WsTransport  # noqa: E402
from tests.helpers import child_env, free_port, wait_for  # noqa: E402
from tests.mosquitto import Mosquitto  # noqa: E402
from tests.mqtt_helpers import Publisher  # noqa: E402

TOPIC = "bench"


class Agents:
    """N agents (transport + own store) in one process; start/stop them all at once."""

    def __init__(self, root: Path, make: Any, n: int) -> None:
        self.stores = [Store(root / f"agent{i}.db").open() for i in range(n)]
        self.transports: list[Transport] = [make(i, s) for i, s in enumerate(self.stores)]
        self.tasks: list[asyncio.Task[None]] = []
        self.deliveries = 0
        self.commits = 0  # store transactions: the agents' batch size is deliveries / commits
        self.stored = [0] * n  # new messages committed per agent (polling count(*) would cost)

    def _sink(self, i: int) -> Any:
        store = self.stores[i]

        async def sink(batch: Batch) -> None:
            self.deliveries += len(batch.messages)
            self.commits += 1
            fresh = await asyncio.to_thread(
                store.insert_batch, batch.messages, source=batch.source, cursor=batch.cursor
            )
            self.stored[i] += len(fresh)

        return sink

    def start(self) -> None:
        self.stored = [s.count() for s in self.stores]
        self.tasks = [asyncio.create_task(t.run(self._sink(i)))
                      for i, t in enumerate(self.transports)]  # fmt: skip

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []

    async def until(self, pred: Any, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise TimeoutError("benchmark condition not reached")
            await asyncio.sleep(0.01)

    def counts(self) -> list[int]:
        return self.stored

    def close(self) -> None:
        for s in self.stores:
            s.close()


def _make(kind: str, url: str, cfg: AgentConfig, name: str, store: Store) -> Transport:
    if kind == "mqtt":
        return MqttTransport(url, cfg, topics=cfg.topics, client_id=name)
    return WsTransport(url, cfg, topics=cfg.topics, store=store)


def _worker_main(conn: Any, kind: str, url: str, root: str, names: list[str],
                 compress: bool) -> None:  # fmt: skip
    asyncio.run(_worker(conn, kind, url, Path(root), names, compress))


async def _worker(conn: Any, kind: str, url: str, root: Path, names: list[str],
                  compress: bool) -> None:  # fmt: skip
    """One worker process's share of the agents, driven by AgentPool over a pipe."""
    cfg = _cfg(root, compress)
    agents = Agents(root, lambda i, st: _make(kind, url, cfg, names[i], st), len(names))
    try:
        while (cmd := await asyncio.to_thread(conn.recv)) is not None:
            agents.start()
            if cmd == "connect":
                await agents.until(lambda: all(t.state == "connected" for t in agents.transports))
                await agents.stop()
                conn.send(None)
                continue
            cpu0 = time.process_time()
            await agents.until(lambda: all(c == cmd for c in agents.counts()))
            done, cpu = time.monotonic(), time.process_time() - cpu0
            await agents.stop()
            conn.send((done, cpu, agents.deliveries, agents.commits))
    except Exception as exc:  # reported to the parent, which fails the run
        conn.send(f"worker failed: {exc!r}")
    finally:
        await agents.stop()
        agents.close()
        conn.close()


class AgentPool:
    """N agents spread round-robin over ``workers`` processes (real devices do not share one
    interpreter): ``connect()`` creates their sessions and takes them offline again;
    ``backlog(n)`` starts them all and returns (time the last one had n stored, CPU seconds
    the workers spent meanwhile, batches' messages delivered, store commits)."""

    def __init__(self, kind: str, url: str, root: Path, tag: str, args: argparse.Namespace
                 ) -> None:  # fmt: skip
        ctx = mp.get_context("spawn")
        n, workers = args.agents, args.workers
        self.conns: list[Any] = []
        self.procs: list[Any] = []
        for w in range(min(workers, n)):
            names = [f"{tag}-{i}" for i in range(w, n, workers)]
            parent, child = ctx.Pipe()
            wroot = root / f"worker{w}"
            wroot.mkdir(parents=True)
            work = (child, kind, url, str(wroot), names, args.compress)
            proc = ctx.Process(target=_worker_main, args=work, daemon=True)
            proc.start()
            pin(proc.pid, args.agent_cores)  # the agents' core: the devices' own CPU
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    async def _all(self, cmd: Any) -> list[Any]:
        for c in self.conns:
            c.send(cmd)
        out = await asyncio.gather(*(asyncio.to_thread(c.recv) for c in self.conns))
        for r in out:
            if isinstance(r, str):
                raise RuntimeError(r)
        return out

    async def connect(self) -> None:
        await self._all("connect")

    async def backlog(self, n: int) -> tuple[float, float, int, int]:
        out = await self._all(n)
        return (max(o[0] for o in out), sum(o[1] for o in out), sum(o[2] for o in out),
                sum(o[3] for o in out))  # fmt: skip

    def close(self) -> None:
        for c, p in zip(self.conns, self.procs, strict=True):
            try:
                c.send(None)
                c.recv()  # EOF once the worker closed its stores and its end
            except (OSError, EOFError):
                pass
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
            c.close()


async def _until(pred: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        await asyncio.sleep(0.01)


def _cfg(root: Path, compress: bool) -> AgentConfig:
    cfg = config.load({}, env={"PUSHAGENT_HOME": str(root / "home")})
    mqtt = MqttConfig(max_batch=1000, compress="zstd" if compress else "none")
    return replace(cfg, topics=(TOPIC,), mqtt=mqtt, ws=WsConfig(keepalive=45, compress=compress))


def pin(pid: int, cores: set[int] | None) -> None:
    """Keep process ``pid`` on ``cores`` (``taskset -p``; None: anywhere)."""
    if cores:
        os.sched_setaffinity(pid, cores)


def typical(tag: str, i: int) -> dict[str, Any]:
    """A typical monitoring message (~230 bytes as an envelope), as bench/ws_compression.py."""
    host = f"web-{i % 17:02d}"
    return {"id": f"{tag}{i:05d}", "title": f"backup {host}", "priority": 1 + i % 5,
            "message": f"Backup of {host} finished in {30 + i % 90} s: {1000 + 37 * i} files, "
                       "0 errors", "tags": ["floppy_disk", "white_check_mark"]}  # fmt: skip


def _publish(broker: Mosquitto, n: int, tag: str, compress: bool) -> None:
    """The cloud's publisher; with ``compress`` its payloads go through the agent's MQTT codec
    (zstd, which leaves envelopes below 512 bytes as they are, as these are)."""
    mode = "zstd" if compress else "none"
    with Publisher(broker.port) as pub:
        pub.publish(TOPIC, (mqtt_codec.pack(json.dumps(typical(tag, i)).encode(), mode)
                            for i in range(n)))  # fmt: skip


async def direct(
    root: Path, broker: Mosquitto, args: argparse.Namespace, tag: str
) -> dict[str, Any]:
    with WanLink(broker.port, args.delay, mbit(args.bandwidth)) as wan:
        url = f"mqtt://127.0.0.1:{wan.port}"
        agents = AgentPool("mqtt", url, root / "direct", f"{tag}-direct", args)
        try:
            await agents.connect()  # sessions are created on the cloud broker and kept
            await asyncio.to_thread(_publish, broker, args.messages, tag, args.compress)
            wan.reset()
            t0 = time.monotonic()
            done, agents_cpu, deliveries, commits = await agents.backlog(args.messages)
            elapsed = done - t0
            delivered = args.agents * args.messages
            return {
                "scenario": "direct", "agents": args.agents, "messages": args.messages,
                "wan_delay_ms": args.delay * 1000, "bandwidth_mbit": args.bandwidth,
                "backlog_s": round(elapsed, 3), "agents_cpu_s": round(agents_cpu, 3),
                "cloud_bytes": wan.down,
                "cloud_bytes_per_delivered": round(wan.down / delivered, 1),
                "link_min_s": _link_min(wan.down, args.bandwidth),
                "cloud_copies_per_message": deliveries / args.messages,
                "agent_batch_mean": round(deliveries / max(commits, 1), 1),
            }  # fmt: skip
        finally:
            agents.close()


def _link_min(down_bytes: int, bandwidth: str) -> float | None:
    """The least time ``down_bytes`` take on the line's downlink (None: unlimited)."""
    rate = mbit(bandwidth)[0]
    return round(down_bytes / rate, 3) if rate else None


def _relay_count(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/stats", timeout=5) as r:
            stats = json.loads(r.read())
    except OSError:
        return 0
    table = stats.get("topics", stats)
    return int(table.get(TOPIC, {}).get("published", 0)) if isinstance(table, dict) else 0


def _relay_upstream(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=5) as r:
            return str(json.loads(r.read())["upstream"]["state"])
    except OSError:
        return "down"


async def via_relay(
    root: Path, broker: Mosquitto, args: argparse.Namespace, tag: str
) -> dict[str, Any]:
    with WanLink(broker.port, args.delay, mbit(args.bandwidth)) as wan:
        port = free_port()
        relay_dir = root / "relay"
        relay_dir.mkdir(parents=True)
        (relay_dir / "relay.toml").write_text(f"compress = {str(args.compress).lower()}\n")
        log = (relay_dir / "relay.log").open("wb")
        relay = subprocess.Popen(
            [sys.executable, "-m", "edge_relay", "serve", "--listen", f"127.0.0.1:{port}",
             "--data-dir", str(relay_dir / "data"), "--no-advertise",
             "--upstream", f"mqtt://127.0.0.1:{wan.port}", "--upstream-topic", TOPIC,
             "--config", str(relay_dir / "relay.toml")],
            env=child_env(), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

        agents = AgentPool("ws", f"http://127.0.0.1:{port}", root / "viarelay", f"{tag}-relay",
                           args)  # fmt: skip
        try:
            await asyncio.to_thread(wait_for, lambda: _relay_upstream(port) == "connected",
                                    timeout=180, what=f"relay upstream connected "
                                    f"({relay_dir / 'relay.log'})")  # fmt: skip
            await agents.connect()
            wan.reset()
            t_pub = time.monotonic()
            await asyncio.to_thread(_publish, broker, args.messages, tag, args.compress)
            await _until(lambda: _relay_count(port) >= args.messages)
            upstream_s = time.monotonic() - t_pub
            cloud = wan.down
            t0, rcpu0 = time.monotonic(), cpu(relay.pid)
            done, agents_cpu, deliveries, commits = await agents.backlog(args.messages)
            elapsed = done - t0
            used = {"agents_cpu_s": round(agents_cpu, 3),
                    "agent_batch_mean": round(deliveries / max(commits, 1), 1),
                    "relay_cpu_s": round(cpu(relay.pid) - rcpu0, 3)}  # fmt: skip
            delivered = args.agents * args.messages
            return {
                "scenario": "relay", "agents": args.agents, "messages": args.messages,
                "wan_delay_ms": args.delay * 1000, "bandwidth_mbit": args.bandwidth,
                "backlog_s": round(elapsed, 3),
                "relay_upstream_fill_s": round(upstream_s, 3), **used,
                "cloud_bytes": cloud,
                "cloud_bytes_per_delivered": round(cloud / delivered, 1),
                "cloud_copies_per_message": _relay_count(port) / args.messages,
            }  # fmt: skip
        finally:
            agents.close()
            relay.terminate()
            relay.wait(timeout=15)
            log.close()


def _cores(text: str) -> tuple[set[int] | None, set[int] | None]:
    """``--pin SERVERS:AGENTS`` (core lists like ``0`` or ``2,3``; ``none``: no pinning)."""
    if text == "none":
        return None, None
    servers, _, agents = text.partition(":")
    return ({int(c) for c in servers.split(",")}, {int(c) for c in agents.split(",")})


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", type=int, nargs="+", default=[20, 1],
                   help="agent counts to compare (each a pair of scenarios)")  # fmt: skip
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--delay", type=float, default=0.040, help="one-way WAN delay, seconds")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--bandwidth", nargs="+", default=["20/5"], metavar="DOWN[/UP]",
                   help="the WAN line in Mbit/s, shared by all connections (0: unlimited); "
                   "several: one comparison each")  # fmt: skip
    p.add_argument("--workers", type=int, default=2,
                   help="processes the agents of each scenario are spread over")  # fmt: skip
    p.add_argument(
        "--pin",
        default="0:1" if (os.cpu_count() or 1) >= 2 else "none",
        help="SERVER_CORES:AGENT_CORES: the broker, the WAN proxy, the relay "
        "and this process on the first, the agents on the second (none: off)",
    )
    p.add_argument("--compress", choices=("on", "off", "both"), default="both",
                   help="WebSocket permessage-deflate and the MQTT zstd codec")  # fmt: skip
    args = p.parse_args()
    args.server_cores, args.agent_cores = _cores(args.pin)
    pin(os.getpid(), args.server_cores)  # inherited by the broker, the proxy and the relay
    print(json.dumps({"pin": args.pin, "loadavg_start": os.getloadavg()}), flush=True)
    modes = {"on": [True], "off": [False], "both": [False, True]}[args.compress]
    for bandwidth in args.bandwidth:
        mbit(bandwidth)  # a bad value fails before the first scenario
    with tempfile.TemporaryDirectory() as tmp:
        for bandwidth in args.bandwidth:
            for compress in modes:
                for n in args.agents:
                    case = {"agents": n, "compress": compress, "bandwidth": bandwidth}
                    run = argparse.Namespace(**{**vars(args), **case})
                    await _compare(Path(tmp), run)
    print(json.dumps({"loadavg_end": os.getloadavg()}), flush=True)


async def _compare(tmp: Path, args: argparse.Namespace) -> None:
    results: dict[str, list[dict[str, Any]]] = {"direct": [], "relay": []}
    for r in range(args.rounds):
        for name, scenario in (("direct", direct), ("relay", via_relay)):
            link = args.bandwidth.replace("/", "_").replace(".", "p")
            tag = f"a{args.agents}r{r}{name[0]}{int(args.compress)}b{link}"
            # A fresh cloud per scenario: with one broker for the run, every earlier
            # scenario's persistent sessions queued each later publish (240 dead sessions and
            # ~600 MB by the end of a default run, autosaved every second), so the broker,
            # on the relay's core, grew busier scenario by scenario.
            broker = Mosquitto(tmp / tag / "cloud").start()
            try:
                out = await scenario(tmp / tag, broker, args, tag)
            finally:
                broker.stop()
            out["round"], out["compress"] = r, args.compress
            print(json.dumps(out), flush=True)
            results[name].append(out)
    med = {k: statistics.median(x["backlog_s"] for x in v) for k, v in results.items()}
    bpd = {k: statistics.median(x["cloud_bytes_per_delivered"] for x in v)
           for k, v in results.items()}  # fmt: skip
    per_round = [round(d["backlog_s"] / max(1e-9, r["backlog_s"]), 1)
                 for d, r in zip(results["direct"], results["relay"], strict=True)]  # fmt: skip
    print(json.dumps({
        "scenario": "comparison", "agents": args.agents, "rounds": args.rounds,
        "compress": args.compress, "bandwidth_mbit": args.bandwidth, "pin": args.pin,
        "backlog_s_median": med, "backlog_speedup": round(med["direct"] / med["relay"], 2),
        "speedup_per_round": per_round,
        "cloud_bytes_per_delivered_median": bpd,
        "cloud_bytes_ratio": round(bpd["direct"] / bpd["relay"], 1),
        "cloud_copies_per_message": {k: v[-1]["cloud_copies_per_message"]
                                     for k, v in results.items()},
    }), flush=True)  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
