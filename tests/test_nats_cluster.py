"""A 3-node NATS cluster on loopback (JetStream, MQTT on every node, ``stream_replicas: 3``):
node failures cost nothing (issue 13, "proven by").

The agent has two nodes in ``--server``; 2,000 messages with ids are published on the third.
The node in use is SIGKILLed mid-stream, later restarted, then the other one is killed:
2,000 of 2,000, none twice. A fresh agent started while a node is down (that node first in
its list) connects within 15 s.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokers import NatsCluster, mqtt_ready
from tests.helpers import wait_for
from tests.mqtt_helpers import Agent, assert_exactly, envelope, stored_ids
from tests.test_mqtt_brokers_faults import Background

N = 2000


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    c = NatsCluster(tmp_path / "cluster").start()
    try:
        yield c
    finally:
        c.stop()


def _in_use(agent: Agent) -> str:
    status = agent.status()
    return str(status.get("server")) if status.get("state") == "connected" else ""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_node_failures_lose_nothing_and_repeat_nothing(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    n0, n1, n2 = cluster.nodes
    topic, prefix = f"t{uuid.uuid4().hex[:8]}", f"c{uuid.uuid4().hex[:6]}"
    home = tmp_path / "home"
    home.mkdir()
    agent = Agent(home, n0.url, "--server", n1.url, "--topic", f"{topic}/#").start()
    try:
        assert _in_use(agent).endswith(f":{n0.port}")
        pub = Background(n2.port, f"{topic}/x", prefix, range(N), payload=envelope)
        wait_for(lambda: len(stored_ids(home)) > 500, timeout=60, what="500 stored")
        n0.kill()  # the node in use
        wait_for(lambda: _in_use(agent).endswith(f":{n1.port}"), timeout=60,
                 what=f"the agent on the other node ({agent.log()[-1500:]})")  # fmt: skip
        n0.start()
        wait_for(lambda: len(stored_ids(home)) > 1300, timeout=120, what="1300 stored")
        n1.kill()  # the other one
        pub.join()
        wait_for(lambda: len(stored_ids(home)) >= N, timeout=180,
                 what=f"{N} stored ({len(stored_ids(home))}; {agent.log()[-1500:]})")  # fmt: skip
        assert_exactly(stored_ids(home), [f"{prefix}{i:05d}" for i in range(N)])

        # a fresh agent, the dead node first in its list
        fresh_home = tmp_path / "fresh"
        fresh_home.mkdir()
        started = time.monotonic()
        fresh = Agent(fresh_home, n1.url, "--server", n0.url, "--topic", f"{topic}/#")
        fresh.start(wait_connected=False)
        wait_for(lambda: fresh.status().get("state") == "connected", timeout=15,
                 what=f"a fresh agent connected ({fresh.log()[-1500:]})")  # fmt: skip
        took = time.monotonic() - started
        assert fresh.stop() == 0
        print(f"fresh agent connected in {took:.1f} s with a node down")
        n1.start()
        assert mqtt_ready(n1.port)
    finally:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.stop()
