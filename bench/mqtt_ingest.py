"""MQTT agent ingest: backlog drain rate and publish → hand-off latency, against a bare paho
subscriber in the same run on the same broker (a real mosquitto, the test fixture's config;
or RabbitMQ 3.10 / NATS 2.9 from tests/brokers.py with ``--broker``).

    /work/venv/bin/python bench/mqtt_ingest.py [--backlog 20000] [--rate 200] [--seconds 10]
    /work/venv/bin/python bench/mqtt_ingest.py --encrypted   # + E2E drain against clear
    /work/venv/bin/python bench/mqtt_ingest.py --broker mosquitto|nats|rabbitmq

``--encrypted`` adds a drain of the same backlog published end-to-end encrypted (JWE, the
agent holding the topic's key, so every message is decrypted before it is stored), run
beside each clear drain; its scenario reports encrypted/clear agent rates (target >= 0.8).

RabbitMQ and NATS speak only MQTT 3.1.1: there the bare subscriber and the publishers use
3.1.1 (a persistent session: clean session off) and the agent finds 3.1.1 itself (``auto``).

Prints one JSON object per scenario. Both sides run with the GC settings of ``pushagent run``
(``agent.service.tune_gc``). The agent runs in-process (the real AgentService:
transport, store with synchronous=FULL, hand-off with the mark committed); only its notifier
is swapped for one that records the hand-off time (no notifier=none equivalent measures that).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# --encrypted keeps the bench's keys in the 0600 file (agent.e2e.keystore), not a real keyring
os.environ.setdefault("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import agent.service as service_mod
from agent import config
from agent.notify import NullNotifier
from agent.store import Store, Stored
from tests.brokers import Nats, RabbitMQ
from tests.mosquitto import Mosquitto

wire_protocol = paho.MQTTv5
"""What the bare subscriber and the publishers speak (3.1.1 for RabbitMQ and NATS)."""


class Recording(NullNotifier):
    """Records, per message, the monotonic time it was handed over."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.count = 0

    async def show(self, items: Sequence[Stored]) -> None:
        now = time.monotonic()
        for item in items:
            self.times[item.message.id] = now
        self.count += len(items)


def publish_all(port: int, payloads: list[bytes], topic: str = "b/x") -> None:
    c = paho.Client(CallbackAPIVersion.VERSION2, protocol=wire_protocol)
    c.max_inflight_messages_set(1000)
    c.connect("127.0.0.1", port)
    c.loop_start()
    infos = [c.publish(topic, p, qos=1) for p in payloads]
    for i in infos:
        i.wait_for_publish(120)
    c.disconnect()
    c.loop_stop()


def bare_client(port: int, client_id: str, on_message: Any) -> paho.Client:
    if wire_protocol != paho.MQTTv5:
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=wire_protocol,
                        clean_session=False)  # fmt: skip
        c.on_message = on_message
        c.connect("127.0.0.1", port)
        return c
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    c.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    return c


def bare_drain(port: int, n: int, r: int) -> float:
    """A bare paho subscriber (auto-ack, counts only): messages/s draining an n backlog."""
    done = threading.Event()
    count = 0

    def on_message(c: Any, u: Any, m: Any) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    c = bare_client(port, f"bench-bare{r}", on_message)
    c.loop_start()
    c.subscribe(f"bare{r}/#", qos=1)
    time.sleep(0.5)
    c.disconnect()
    c.loop_stop()
    payloads = [json.dumps({"id": f"x{i}", "message": "m"}).encode() for i in range(n)]
    publish_all(port, payloads, f"bare{r}/x")
    start = time.monotonic()
    c = bare_client(port, f"bench-bare{r}", on_message)
    c.loop_start()
    done.wait(300)
    elapsed = time.monotonic() - start
    c.disconnect()
    c.loop_stop()
    return n / elapsed


def agent_cfg(home: Path, url: str, topic: str) -> config.AgentConfig:
    return config.load(
        {"servers": [url], "topics": [topic], "notifier": "none", "receipts.enabled": False},
        env={"PUSHAGENT_HOME": str(home)},
    )


def clear_payloads(n: int, topic: str) -> list[bytes]:
    return [json.dumps({"id": f"a{i:06d}", "message": "m"}).encode() for i in range(n)]


def sealed_payloads(n: int, topic: str, cfg: config.AgentConfig) -> list[bytes]:
    """The same messages, end-to-end encrypted with a key the agent holds."""
    from agent.e2e import keys, seal
    from agent.e2e.keystore import KeyStore
    from agent.envelope import dumps, from_fields

    key = keys.new_key()
    kid, _ = KeyStore(cfg).add(topic, key)
    msgs = (from_fields({"id": f"a{i:06d}", "message": "m"}, topic=topic) for i in range(n))
    return [dumps(seal.seal(m, key, kid)).encode() for m in msgs]


CPU: dict[str, list[float]] = {"clear": [], "encrypted": []}
"""Per agent drain, the process's CPU time per message (us): less swayed than the rate by
what else the box runs (the publishers are done before the drain starts)."""


async def agent_drain(port: int, n: int, home: Path, r: int, encrypted: bool = False) -> float:
    prefix = f"agent{r}{'e' if encrypted else ''}"
    cfg = agent_cfg(home, f"mqtt://127.0.0.1:{port}", f"{prefix}/#")
    async with service_mod.AgentService(cfg) as svc:  # creates the session
        while svc.state() != "connected":
            await asyncio.sleep(0.01)
    topic = f"{prefix}/x"
    payloads = sealed_payloads(n, topic, cfg) if encrypted else clear_payloads(n, topic)
    await asyncio.to_thread(publish_all, port, payloads, topic)
    last = f"a{n - 1:06d}"
    start, cpu = time.monotonic(), time.process_time()
    async with service_mod.AgentService(cfg) as svc:
        while svc.last_message_id != last:
            await asyncio.sleep(0.002)
        elapsed = time.monotonic() - start
        CPU["encrypted" if encrypted else "clear"].append((time.process_time() - cpu) / n * 1e6)
        stored = await asyncio.to_thread(svc.store.count)
    assert stored == n, f"stored {stored} of {n}"
    if encrypted:
        with Store(cfg.paths.db) as store:
            states = store.count_by_state()
        assert states == {"received": n}, f"not all decrypted: {states}"
    return n / elapsed


async def agent_latency(port: int, rate: float, seconds: float, home: Path) -> list[float]:
    cfg = agent_cfg(home, f"mqtt://127.0.0.1:{port}", "llat/#")
    recorder = Recording()
    service_mod.make_notifier = lambda cfg, on_event, store=None: recorder  # type: ignore
    sent: dict[str, float] = {}
    async with service_mod.AgentService(cfg) as svc:
        while svc.state() != "connected":
            await asyncio.sleep(0.01)
        await asyncio.to_thread(paced_publish, port, rate, seconds, sent, "l")
        deadline = time.monotonic() + 30
        while recorder.count < len(sent) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    return [(recorder.times[i] - t) * 1000 for i, t in sent.items() if i in recorder.times]


def paced_publish(port: int, rate: float, seconds: float, sent: dict[str, float], p: str) -> None:
    c = paho.Client(CallbackAPIVersion.VERSION2, protocol=wire_protocol)
    c.connect("127.0.0.1", port)
    c.loop_start()
    start = time.monotonic()
    for i in range(int(rate * seconds)):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        mid = f"{p}{i:06d}"
        sent[mid] = time.monotonic()
        c.publish(f"{p}lat/x", json.dumps({"id": mid, "message": "m"}).encode(), qos=1)
    time.sleep(0.5)
    c.disconnect()
    c.loop_stop()


def bare_latency(port: int, rate: float, seconds: float) -> list[float]:
    got: dict[str, float] = {}

    def on_message(c: Any, u: Any, m: Any) -> None:
        got[json.loads(m.payload)["id"]] = time.monotonic()

    c = bare_client(port, "bench-bare-lat", on_message)
    c.loop_start()
    c.subscribe("ylat/#", qos=1)
    time.sleep(0.5)
    sent: dict[str, float] = {}
    paced_publish(port, rate, seconds, sent, "y")
    c.disconnect()
    c.loop_stop()
    return [(got[i] - t) * 1000 for i, t in sent.items() if i in got]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backlog", type=int, default=20000)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--encrypted", action="store_true", help="also drain an E2E backlog")
    ap.add_argument(
        "--inflight", type=int, default=100,
        help="the broker's max_inflight_messages (the test fixture's is 100); with "
        "--broker rabbitmq its mqtt.prefetch (RabbitMQ's default 10 unless given)",
    )  # fmt: skip
    ap.add_argument("--broker", choices=("mosquitto", "nats", "rabbitmq"), default="mosquitto")
    args = ap.parse_args()
    global wire_protocol
    wire_protocol = paho.MQTTv5 if args.broker == "mosquitto" else paho.MQTTv311
    # The process settings `pushagent run` uses; they apply to the bare subscriber here too.
    service_mod.tune_gc()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        broker: Mosquitto | Nats | RabbitMQ
        if args.broker == "mosquitto":
            broker = Mosquitto(
                root / "mosquitto", extra_config=f"max_inflight_messages {args.inflight}"
            )
        elif args.broker == "rabbitmq":
            explicit = "--inflight" in sys.argv
            broker = RabbitMQ(root / "rabbitmq", prefetch=args.inflight if explicit else None)
        else:
            broker = Nats(root / "nats")
        broker.start()
        try:
            bare_rates, agent_rates, sealed_rates = [], [], []
            for r in range(args.repeat):
                bare_rates.append(bare_drain(broker.port, args.backlog, r))
                home = root / f"home{r}"
                agent_rates.append(asyncio.run(agent_drain(broker.port, args.backlog, home, r)))
                if args.encrypted:
                    sealed_rates.append(asyncio.run(agent_drain(
                        broker.port, args.backlog, root / f"home{r}e", r, encrypted=True
                    )))  # fmt: skip
            bare, agent = statistics.median(bare_rates), statistics.median(agent_rates)
            print(json.dumps({
                "scenario": "backlog_drain", "broker": args.broker,
                "messages": args.backlog, "repeat": args.repeat,
                "bare_paho_msgs_per_s": round(bare), "agent_msgs_per_s": round(agent),
                "ratio": round(agent / bare, 3), "target_ratio": 0.7,
                "broker_max_inflight_messages": (
                    args.inflight
                    if args.broker == "mosquitto"
                    else getattr(broker, "prefetch", None)
                ),
            }))  # fmt: skip
            if args.encrypted:
                sealed = statistics.median(sealed_rates)
                ratios = [round(e / c, 3) for e, c in zip(sealed_rates, agent_rates, strict=True)]
                print(json.dumps({
                    "scenario": "backlog_drain_encrypted", "messages": args.backlog,
                    "repeat": args.repeat, "agent_clear_msgs_per_s": round(agent),
                    "agent_encrypted_msgs_per_s": round(sealed), "run_ratios": ratios,
                    "ratio": round(sealed / agent, 3), "target_ratio": 0.8,
                    "cpu_us_per_msg_clear": [round(c, 1) for c in CPU["clear"]],
                    "cpu_us_per_msg_encrypted": [round(c, 1) for c in CPU["encrypted"]],
                    "cpu_ratio": round(
                        statistics.median(CPU["clear"]) / statistics.median(CPU["encrypted"]), 3
                    ),
                }))  # fmt: skip
            lat_bare = bare_latency(broker.port, args.rate, args.seconds)
            lat_agent = asyncio.run(
                agent_latency(broker.port, args.rate, args.seconds, root / "home-lat")
            )
            print(json.dumps({
                "scenario": "latency_publish_to_handoff", "broker": args.broker,
                "rate_per_s": args.rate,
                "messages": len(lat_agent),
                "bare_paho_p50_ms": pct(lat_bare, 0.5), "bare_paho_p99_ms": pct(lat_bare, 0.99),
                "agent_p50_ms": pct(lat_agent, 0.5), "agent_p99_ms": pct(lat_agent, 0.99),
                "target_agent_p99_ms": 10,
            }))  # fmt: skip
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
