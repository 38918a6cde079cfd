"""A resend on the same connection of a message not yet acknowledged is stored once, on
every broker (``mqtt_redelivery.InFlight``).

Within one connection a broker may not give a packet id to another message before the
client's PUBACK for it (MQTT 3.1.1 §2.3.1, MQTT 5 §2.2.1), so a DUP under a packet id still in
flight, with the same topic and bytes, is a resend even where packet ids prove nothing across
connections (NATS, RabbitMQ: ``redelivery`` untrusted). The pure rule first, then the real
case: NATS resends what its ack wait (tests.brokers.ACK_WAIT) saw unacknowledged, on the
same connection, to an agent SIGSTOPped past it.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from agent.transports.mqtt_redelivery import InFlight
from tests.brokers import ACK_WAIT, Client311, Nats
from tests.helpers import wait_for
from tests.mqtt_helpers import Agent
from tests.test_mqtt_plain_resend import queued_bytes, texts

# --- the rule ---------------------------------------------------------------------------------


def test_a_dup_of_a_message_in_flight_is_a_resend_until_its_puback() -> None:
    f = InFlight()
    assert not f.resend(7, 1, False, "t/a", b"on")  # in flight from now on
    assert f.resend(7, 1, True, "t/a", b"on")  # the broker resent it: drop, no PUBACK
    assert f.resend(7, 1, True, "t/a", b"on")  # ... and again after another ack wait
    assert f.dropped == 2
    f.acked(7)  # the one PUBACK went out: the broker may give 7 to a new message
    assert not f.resend(7, 1, True, "t/a", b"on")  # not provably the old one: kept
    assert f.dropped == 2


def test_what_is_not_a_resend_of_one_in_flight_is_kept() -> None:
    f = InFlight()
    assert not f.resend(7, 1, False, "t/a", b"on")
    assert not f.resend(7, 1, False, "t/a", b"on")  # no DUP: a new message (a broker's bug)
    assert not f.resend(8, 1, True, "t/a", b"on")  # another packet id: never in flight here
    assert not f.resend(9, 0, True, "t/a", b"on")  # QoS 0 has no packet id to go by
    assert not f.resend(9, 2, False, "t/a", b"x") and not f.resend(9, 2, True, "t/a", b"x")
    assert f.dropped == 0


def test_a_dup_with_the_same_packet_id_but_other_bytes_is_kept() -> None:
    f = InFlight()
    assert not f.resend(7, 1, False, "t/a", b"on")
    assert not f.resend(7, 1, True, "t/a", b"off")  # other payload
    assert not f.resend(7, 1, True, "t/b", b"off")  # other topic
    assert not f.resend(5, 1, False, None, b"on")  # a topic that is not UTF-8: nothing to compare
    assert not f.resend(5, 1, True, None, b"on")
    assert f.dropped == 0


def test_a_new_connection_has_nothing_in_flight() -> None:
    # one InFlight per connection (PahoConn): what the last one held proves nothing here
    old, new = InFlight(), InFlight()
    assert not old.resend(7, 1, False, "t/a", b"on")
    assert not new.resend(7, 1, True, "t/a", b"on")


# --- NATS, for real ---------------------------------------------------------------------------

N = 50
"""Messages in flight: their 2N packets are read in one burst (paho_conn.READ_BURST), so every
resend is read before the first PUBACK goes out."""


def publish_size(topic: str, payload: bytes) -> int:
    """Bytes of a QoS 1 PUBLISH (fixed header, topic, packet id, payload; below 128 bytes)."""
    remaining = 2 + len(topic.encode()) + 2 + len(payload)
    assert remaining < 128
    return 2 + remaining


def dropped(agent: Agent) -> int:
    return sum(int(n) for n in re.findall(r"(\d+) resends of messages in flight", agent.log()))


@pytest.mark.timeout(180)
def test_nats_resends_to_a_stalled_agent_are_stored_once(nats: Nats, home: Path) -> None:
    topic = f"t{uuid.uuid4().hex[:10]}"
    agent = Agent(home, nats.url, "--topic", f"{topic}/#").start()
    pub = Client311(nats.port, f"pub-{topic}")
    try:
        pub.publish(f"{topic}/x", b"warm up")
        wait_for(lambda: len(texts(home)) == 1, timeout=20, what="the first message stored")
        assert agent.proc is not None
        pid = agent.proc.pid
        os.kill(pid, signal.SIGSTOP)
        sent = [f"plain {topic} {i}".encode() for i in range(N)]
        for payload in sent:
            pub.publish(f"{topic}/x", payload)
        size = sum(publish_size(f"{topic}/x", p) for p in sent)
        wait_for(lambda: queued_bytes(pid, nats.port) >= size, timeout=20,
                 what=f"{N} messages in the stopped agent's socket")  # fmt: skip
        # after its ack wait NATS resends all N, DUP set, on the same connection
        wait_for(lambda: queued_bytes(pid, nats.port) >= 2 * size, timeout=4 * ACK_WAIT,
                 what=f"{N} resends in the stopped agent's socket")  # fmt: skip
        os.kill(pid, signal.SIGCONT)
        pub.publish(f"{topic}/x", b"marker")  # after the resends on the agent's link
        wait_for(lambda: "marker" in [m for _, m in texts(home)], timeout=30, what="the marker")
        got = Counter(m for _, m in texts(home))
        twice = sorted(m for m, n in got.items() if n > 1)
        assert twice == [], f"{len(twice)} of {N} stored twice: {twice[:5]}"
        assert got == Counter(["warm up", "marker", *(p.decode() for p in sent)])
        assert dropped(agent) >= N, agent.log()[-2000:]
        # Each was acknowledged once: NATS does not resend any after another ack wait (an
        # absence, so it is given the time in which it would have happened).
        seen = dropped(agent)
        time.sleep(ACK_WAIT + 2)
        assert dropped(agent) == seen and len(texts(home)) == N + 2, agent.log()[-2000:]
    finally:
        pub.close()
        if agent.proc is not None and agent.proc.poll() is None:
            os.kill(agent.proc.pid, signal.SIGCONT)
            agent.stop()
