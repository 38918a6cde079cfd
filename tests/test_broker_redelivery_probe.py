"""Probes: what each broker really does with packet ids and DUP when a subscriber's link is
cut with messages unacknowledged (issue 13). Kept as tests: a broker upgrade that changes its
behaviour fails here first, and docs/MQTT.md's broker table is this test's table.

The subscriber is a raw MQTT 3.1.1 client (tests/mqtt_raw.py): it sees each PUBLISH's packet
id and DUP flag as they came off the wire and acks only when told.

Measured (mosquitto 2.0, RabbitMQ 3.10, NATS 2.9, Debian 12):

* mosquitto resends what was unacked with DUP and the SAME packet ids, and numbers on
  across connections of a session.
* RabbitMQ resends with DUP but renumbers from 1 on every connection: a resend carries
  whatever id comes next on the new link.
* NATS resends with DUP (after its ack wait, 30 s by default, 5 s in tests.brokers, unless
  the session is taken over at once)
  and gives a new message the lowest free packet id, so an acked id comes back at once.

* rumqttd 0.20 (PyPI's iotcore 0.4, over MQTT 5; its 3.1.1 listener does the same) resends
  what was unacked on a resumed session, but without DUP and renumbered.

Only the first makes "packet id + DUP + same bytes" a proof of a resend. rumqttd, an MQTT 5
broker the agent trusts under ``redelivery = "auto"`` until it renumbers, never sets DUP, so
the rule cannot drop anything there; tests/test_mqtt_plain_resend.py runs on it too.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.brokers import Broker
from tests.mosquitto import Mosquitto
from tests.mqtt_raw import Pub, RawClient

# broker -> what the probe must find; docs/MQTT.md's table says the same
EXPECTED = {
    "mosquitto": {"resend_has_dup": True, "resend_keeps_its_id": True,
                  "acked_id_reused_at_once": False},
    "rabbitmq": {"resend_has_dup": True, "resend_keeps_its_id": False,
                 "acked_id_reused_at_once": False},
    "nats": {"resend_has_dup": True, "resend_keeps_its_id": True,
             "acked_id_reused_at_once": True},
    "rumqttd": {"resend_has_dup": False, "resend_keeps_its_id": False,
                "acked_id_reused_at_once": False},
}  # fmt: skip
VERSION = {"rumqttd": 5}  # the MQTT version a probe speaks (3.1.1 unless the broker has 5)
RESEND_WAIT = 45.0  # a deadline: NATS resends after its ack wait (tests.brokers.ACK_WAIT)


def probe(port: int, version: int = 4) -> dict[str, bool]:
    """Publish, cut, reconnect twice; what the broker did with ids and DUP (``version`` 5:
    in MQTT 5)."""
    cid, topic = f"probe-{uuid.uuid4().hex[:8]}", f"probe{uuid.uuid4().hex[:8]}"
    pub = RawClient(port, f"{cid}-pub", clean=True, version=version)
    sub = RawClient(port, cid, version=version)
    assert sub.subscribe(f"{topic}/#") == b"\x01"
    pub.publish(f"{topic}/x", [b"a", b"b", b"c"])
    first = sub.receive(3, 10.0)
    assert [p.payload for p in first] == [b"a", b"b", b"c"] and not any(p.dup for p in first)
    sub.cut()  # none acked

    sub = RawClient(port, cid, version=version)
    assert sub.session_present
    resent = sub.receive(3, RESEND_WAIT)
    assert [p.payload for p in resent] == [b"a", b"b", b"c"], resent
    sub.ack(resent)
    sub.ping()
    rounds = []  # one at a time, each acked before the next is published
    for _ in range(5):
        pub.publish(f"{topic}/x", [b"a"])  # the same bytes again: a new message
        [new] = sub.receive(1, 10.0)
        assert new.payload == b"a" and not new.dup
        rounds.append(new)
        if len(rounds) < 5:
            sub.ack([new])
            sub.ping()
    sub.cut()  # the new one unacked

    sub = RawClient(port, cid, version=version)
    [again] = sub.receive(1, RESEND_WAIT)
    assert again.payload == b"a"
    sub.ack([again])
    sub.cut()
    pub.cut()
    return facts(first, resent, rounds, again)


def facts(first: list[Pub], resent: list[Pub], rounds: list[Pub], again: Pub) -> dict[str, bool]:
    new = rounds[-1]
    return {
        "resend_has_dup": all(p.dup for p in [*resent, again]),
        "resend_keeps_its_id": [p.pid for p in resent] == [p.pid for p in first]
        and again.pid == new.pid,
        "acked_id_reused_at_once": len({p.pid for p in rounds}) < len(rounds),
    }


@pytest.mark.timeout(200)
@pytest.mark.parametrize("name", ["mosquitto", "rabbitmq", "nats", "rumqttd"])
def test_what_each_broker_does_with_packet_ids_and_dup(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    broker: Broker | Mosquitto = request.getfixturevalue(name)
    assert probe(broker.port, VERSION.get(name, 4)) == EXPECTED[name]
