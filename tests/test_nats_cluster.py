"""A 3-node NATS cluster on loopback (JetStream, MQTT on every node, ``stream_replicas: 3``):
node failures cost nothing (issue 13, "proven by").

The agent has two nodes in ``--server``; 2,000 messages with ids are published on the third.
The node in use is SIGKILLed mid-stream, later restarted, then the other one is killed:
2,000 of 2,000, none twice. A fresh agent started while a node is down (that node first in
its list) connects within 15 s, plus what the cluster itself costs (see ``_connect_time``).
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
                 what="the agent on the other node")  # fmt: skip
        n0.start()
        wait_for(lambda: pub.ok() and len(stored_ids(home)) > 1300, timeout=120,
                 what="1300 stored")  # fmt: skip
        n1.kill()  # the other one
        pub.join()
        wait_for(lambda: len(stored_ids(home)) >= N, timeout=180, what=f"{N} stored")
        assert_exactly(stored_ids(home), [f"{prefix}{i:05d}" for i in range(N)])

        # a fresh agent, the dead node first in its list
        fresh_home = tmp_path / "fresh"
        fresh_home.mkdir()
        started = time.monotonic()
        fresh = Agent(fresh_home, n1.url, "--server", n0.url, "--topic", f"{topic}/#")
        fresh.start(wait_connected=False)
        try:
            took, refused = _connect_time(fresh, n0.url, started)
        finally:
            code = fresh.stop(timeout=15)  # also when it failed: no agent left behind
        assert code == 0
        print(
            f"fresh agent connected in {took:.1f} s with a node down ({refused} of the cluster's "
            f"4 s timeouts); {pub.retries} publishes sent again for want of a PUBACK"
        )
        n1.start()
        assert mqtt_ready(n1.port)
    finally:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.stop()


def _connect_time(fresh: Agent, live: str, started: float) -> tuple[float, int]:
    """Seconds until ``fresh`` connected, and how many of the cluster's 4 s timeouts it met.

    The agent's own part: the dead first node is passed over at once (within 5 s of the start,
    the interpreter's start included), the whole within 15 s. Measured before the failover did
    that: 10.9-15.9 s, 10 s of it ws.failover_after on the dead node, and 2 of 8 runs not within
    30 s (the agent went back from the live node, refusing SUBSCRIBEs, to the dead one).

    The cluster's part: with a node down, NATS 2.9 creates an R3 JetStream consumer for each
    subject of a SUBSCRIBE (two for ``t/#``) and refuses the SUBSCRIBE when that takes more
    than its fixed 4 s API timeout (its log: "Unable to add JetStream consumer ... timeout",
    then the consumer's leader elected 0.4-1.1 s later; the retry makes new ones), and closes
    a CONNECT when loading the session record times out the same way ("unable to connect:
    loading session record ... timeout"). 0-4 of those per fresh
    agent here (more when the three nodes share one busy core); each adds its 4 s and a
    reconnect (5 s allowed) to the 15 s.
    """
    wait_for(lambda: f"using {live}" in fresh.log(), timeout=5,
             what=f"the dead node passed over ({fresh.log()[-800:]})")  # fmt: skip

    def timeouts() -> int:  # the cluster's own 4 s ones, from the agent's log
        log = fresh.log()
        return log.count("refused for now") + log.count("closed the connection after CONNECT")

    def done() -> bool:
        allowed = 15 + 5 * timeouts()
        return fresh.status().get("state") == "connected" or time.monotonic() - started > allowed

    wait_for(done, timeout=120, what="a fresh agent connected or out of time")
    took, refused = time.monotonic() - started, timeouts()
    assert fresh.status().get("state") == "connected", (
        f"a fresh agent not connected in {took:.1f} s ({refused} cluster timeouts): "
        f"{fresh.log()[-1500:]}"
    )
    return took, refused


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fresh_agents_connect_in_15_s_plus_5_per_cluster_timeout_while_it_refuses(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    """With a node just killed, the survivors refuse some SUBSCRIBEs (3.1.1 failure 0x80, each
    after ~4 s; measured: 8 of 12 in the 15 s after a kill, and up to 4 in a row). Retried with
    the normal backoff instead of the 60 s pause, each fresh agent connects within 15 s plus 5 s
    for each of the cluster's own timeouts it met (with the pause a single refusal costs more
    than 60 s). MQTT 5's refusal is logged once per
    agent: the 3.1.1 CONNACK settles the protocol even when the SUBSCRIBE after it fails."""
    n0, n1, _ = cluster.nodes
    n0.kill()
    refused, k = 0, 0
    # at least 5 agents, and on until one met a refusal (each attempt is refused with
    # probability ~5/9: five in a row all granted happened in ~1 run of 60)
    while k < 5 or (refused == 0 and k < 12):
        home = tmp_path / f"fresh{k}"
        home.mkdir()
        started = time.monotonic()
        agent = Agent(home, n1.url, "--topic", f"e{k}{uuid.uuid4().hex[:6]}/#")
        agent.start(wait_connected=False)
        try:
            wait_for(lambda a=agent: a.status().get("state") == "connected", timeout=120,
                     what=f"fresh agent {k} connected")  # fmt: skip
            took = time.monotonic() - started
            log = agent.log()
            # each of the cluster's own 4 s timeouts (a refused SUBSCRIBE, a CONNECT closed
            # while NATS loads the session) is the broker's, whatever the client does
            # (docs/PERFORMANCE.md): 15 s, and 5 s more for each of them
            timeouts = log.count("refused for now") + log.count("closed the connection after")
            assert took <= 15 + 5 * timeouts, f"agent {k}: {took:.1f} s, {timeouts} timeouts"
            refused += log.count("refused for now")
            assert log.count("MQTT 5 did not work") == 1
            print(f"fresh agent {k}: connected in {took:.1f} s ({timeouts} cluster timeouts)")
        finally:
            agent.stop()
        k += 1
    # the refusal path was taken (else this run proved only that connecting works)
    assert refused >= 1, f"no SUBSCRIBE was refused in {k} fresh agents"
    assert "retrying in 60 s" not in "".join(
        (tmp_path / f"fresh{i}" / "agent.log").read_text() for i in range(k)
    )
