"""A protocol switch in the middle of a persistent session loses nothing queued for the agent
(issue 13, "must handle"): the session is per client id, whichever protocol resumes it.

* mosquitto speaks both: an agent that ran with 3.1.1 and comes back with ``auto`` (MQTT 5
  first) resumes the same session in MQTT 5.
* RabbitMQ and NATS speak only 3.1.1: an agent whose memory says MQTT 5 (a broker that was
  swapped for an older one behind the same name) is refused, falls back to 3.1.1 and resumes
  its 3.1.1 session.

Messages are published while the agent is down, so they wait in the session on the broker.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from tests.brokers import Client311
from tests.helpers import wait_for
from tests.mosquitto import Mosquitto
from tests.mqtt_helpers import Agent, assert_exactly, envelope, stored_ids

N = 50


def _queue(port: int, topic: str, prefix: str) -> list[str]:
    pub = Client311(port, f"pub-{prefix}")
    try:
        for i in range(N):
            pub.publish(f"{topic}/x", envelope(i, prefix))
    finally:
        pub.close()
    return [f"{prefix}{i:05d}" for i in range(N)]


@pytest.mark.parametrize(
    ("name", "before", "after"),
    [("mosquitto", "3.1.1", "5"), ("rabbitmq", "5", "3.1.1"), ("nats", "5", "3.1.1")],
)
def test_nothing_queued_is_lost_across_a_protocol_switch(
    name: str, before: str, after: str, request: pytest.FixtureRequest, home: Path
) -> None:
    broker: Mosquitto = request.getfixturevalue(name)
    topic, prefix = f"t{uuid.uuid4().hex[:8]}", f"q{uuid.uuid4().hex[:6]}"
    args = ("--topic", f"{topic}/#")
    if name == "mosquitto":
        first = Agent(home, broker.url, *args, "--mqtt-protocol", "3.1.1").start()
    else:
        first = Agent(home, broker.url, *args).start()  # auto: 3.1.1, remembered
    assert first.stop() == 0
    assert "with MQTT 3.1.1 (session new)" in first.log()  # the session is a 3.1.1 one
    expected = _queue(broker.port, topic, prefix)  # waits in the session meanwhile
    memory = home / "data" / "mqtt-protocols.json"
    if name != "mosquitto":  # as if the broker had said MQTT 5 an hour ago
        memory.write_text(json.dumps({broker.url: {"protocol": "5", "probed": time.time() - 3600}}))
    again = Agent(home, broker.url, *args).start()  # auto: tries `before` first
    try:
        wait_for(lambda: len(stored_ids(home)) >= N, timeout=60, what=f"{N} queued messages")
        assert_exactly(stored_ids(home), expected)
        log = again.log()
        assert f"with MQTT {after} (session resumed)" in log, log[-2000:]
        assert (f"MQTT {before} did not work" in log) == (before == "5")
        assert json.loads(memory.read_text())[broker.url]["protocol"] == after
    finally:
        assert again.stop() == 0
