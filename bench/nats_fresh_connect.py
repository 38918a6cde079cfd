"""A fresh agent and a 3-node NATS cluster with a node down: the agent's time to ``connected``
beside a bare paho client started at the same moment (the same-run baseline).

Each round kills one node, waits ``--after`` seconds, then starts at once

* the baseline: a paho MQTT 3.1.1 client (persistent session, as the agent's) that CONNECTs
  to a live node and SUBSCRIBEs ``<topic>/#`` at QoS 1, re-sending the SUBSCRIBE on the same
  connection the moment one is refused (the fastest any client can be), and
* ``pushagent run`` given the dead node first, then the same live node, the same kind of topic,

records both times and the baseline's refusals (each one NATS's 4 s JetStream API timeout),
restarts the node and lets the cluster settle before the next round.

    PYTHONPATH=$PWD .venv/bin/python bench/nats_fresh_connect.py --rounds 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.brokers import NatsCluster, mqtt_ready
from tests.helpers import wait_for
from tests.mqtt_helpers import Agent


class Baseline(threading.Thread):
    """CONNECT, then SUBSCRIBE until granted on the same connection; times from ``t0``."""

    def __init__(self, port: int, topic: str, t0: float) -> None:
        super().__init__(daemon=True)
        self.port, self.topic, self.t0 = port, topic, t0
        self.connack: float | None = None
        self.granted: float | None = None
        self.refused: list[float] = []
        self.error: str | None = None

    def run(self) -> None:
        done = threading.Event()
        answers: list[int] = []
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"base-{uuid.uuid4().hex[:8]}",
                        protocol=paho.MQTTv311, clean_session=False)  # fmt: skip

        def on_subscribe(cl: Any, u: Any, mid: int, codes: list[Any], p: Any) -> None:
            answers.append(codes[0].value)
            done.set()

        c.on_subscribe = on_subscribe
        try:
            c.connect("127.0.0.1", self.port, 30)
            c.loop_start()
            wait_for(c.is_connected, timeout=60, interval=0.01, what="baseline CONNACK")
            self.connack = time.monotonic() - self.t0
            while time.monotonic() - self.t0 < 60:
                done.clear()
                c.subscribe(f"{self.topic}/#", qos=1)
                if not done.wait(30):
                    self.error = "no SUBACK in 30 s"
                    return
                if answers[-1] < 0x80:
                    self.granted = time.monotonic() - self.t0
                    return
                self.refused.append(time.monotonic() - self.t0)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            c.disconnect()
            c.loop_stop()


def one_round(cluster: NatsCluster, k: int, after: float, work: Path) -> dict[str, Any]:
    dead, live = cluster.nodes[k % 3], cluster.nodes[(k + 1) % 3]
    dead.kill()
    time.sleep(after)  # a chosen time since the kill, not a wait for an outcome
    home = work / f"agent{k}"
    home.mkdir()
    t0 = time.monotonic()
    base = Baseline(live.port, f"b{uuid.uuid4().hex[:8]}", t0)
    base.start()
    agent = Agent(home, dead.url, "--server", live.url, "--topic", f"a{uuid.uuid4().hex[:8]}/#")
    agent.start(wait_connected=False)
    try:
        wait_for(lambda: agent.status().get("state") == "connected", timeout=90, interval=0.05,
                 what="agent connected")  # fmt: skip
        took: float | None = time.monotonic() - t0
    except TimeoutError:
        took = None
    log = agent.log()
    agent.stop(timeout=15)
    base.join(60)
    dead.start()
    assert mqtt_ready(dead.port)
    time.sleep(5)  # let the restarted node catch up before the next kill (not measured)
    return {
        "agent": took,
        "agent_refusals": log.count("refused for now"),
        "agent_closed": log.count("closed the connection after"),
        "baseline": base.granted,
        "baseline_connack": base.connack,
        "baseline_refusals": len(base.refused),
        "baseline_error": base.error,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--after", type=float, default=1.0, help="seconds from the kill to the start")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cluster = NatsCluster(work / "cluster").start()
        try:
            warm = Baseline(cluster.nodes[0].port, "warm", time.monotonic())
            warm.run()  # creates the MQTT streams with all nodes up
            rows = []
            for k in range(args.rounds):
                row = one_round(cluster, k, args.after, work)
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            cluster.stop()
    agent = [r["agent"] for r in rows]
    base = [r["baseline"] for r in rows]

    def show(xs: list[float | None]) -> str:
        ok = sorted(x for x in xs if x is not None)
        miss = len(xs) - len(ok)
        med = f"median {statistics.median(ok):.1f} s" if ok else "none"
        return f"{med}, max {max(ok, default=0):.1f} s, {miss} missing: " + ", ".join(
            f"{x:.1f}" for x in ok
        )

    print("agent:   ", show(agent))
    print("baseline:", show(base))
    within = sum(1 for x in agent if x is not None and x <= 15)
    print("agent within 15 s:", within, "of", len(agent))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
