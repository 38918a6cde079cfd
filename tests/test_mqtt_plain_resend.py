"""The plain-text loss case of issue 13, on every broker: the same text published again
after a crash, delivered to the agent but killed before the agent read it, must be stored
twice — never once.

RabbitMQ renumbers packet ids from 1 on every connection and NATS hands out the lowest free
id (tests/test_broker_redelivery_probe.py), so the resend of the second ``ON`` arrives with
DUP and the very packet id the first ``ON`` was recorded under: "packet id + digest + DUP"
took it for a resend of the first and dropped it. The agent now trusts packet ids only
where the broker keeps them (``[mqtt] redelivery``).

"Delivered but not read" is made real: the agent is SIGSTOPped, the broker writes the
message into its socket (we wait until the kernel's receive queue holds bytes), then SIGKILL.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.brokers import Client311
from tests.helpers import wait_for
from tests.mosquitto import Mosquitto
from tests.mqtt_helpers import Agent

RESEND_WAIT = 60.0  # a deadline: NATS resends after its ack wait (tests.brokers.ACK_WAIT)


def texts(home: Path) -> list[tuple[str, str]]:
    db = home / "data" / "pushagent.db"
    if not db.exists():
        return []
    conn = sqlite3.connect(db, timeout=10)
    try:
        return [(r[0], r[1]) for r in conn.execute("SELECT id, message FROM messages ORDER BY seq")]
    finally:
        conn.close()


def ons(home: Path) -> list[str]:
    """The ids of the stored "ON" messages, in order (the marker, repeatable, is not one)."""
    return [i for i, m in texts(home) if m == "ON"]


def queued_bytes(pid: int, broker_port: int) -> int:
    """Bytes waiting unread in the receive queue of process ``pid``'s link to the broker."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"( dport = :{broker_port} )"],
                         capture_output=True, text=True, timeout=10, check=True).stdout  # fmt: skip
    return sum(int(line.split()[0]) for line in out.splitlines() if f"pid={pid}," in line)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", ["mosquitto", "rabbitmq", "nats", "rumqttd"])
def test_the_same_text_again_after_a_crash_is_stored_twice_never_once(
    name: str, request: pytest.FixtureRequest, home: Path
) -> None:
    broker: Mosquitto = request.getfixturevalue(name)
    topic = f"t{uuid.uuid4().hex[:10]}"
    agent = Agent(home, broker.url, "--topic", f"{topic}/#").start()
    # rumqttd: the agent on its MQTT 5 listener, the publisher on its 3.1.1 one
    pub = Client311(getattr(broker, "v4_port", broker.port), f"pub-{topic}")
    try:
        pub.publish(f"{topic}/lamp", b"ON")
        wait_for(lambda: len(texts(home)) == 1, timeout=20, what="the first ON stored")
        # The first ON is acked only after its commit: stopped right at the commit, it would
        # be the one in flight that a broker without trusted ids may resend and the agent
        # store again (docs/MQTT.md). A later message committed means its PUBACK went out.
        pub.publish(f"{topic}/marker", b"acked before")
        wait_for(lambda: len(texts(home)) == 2, timeout=20, what="the marker stored")
        assert agent.proc is not None
        pid = agent.proc.pid
        os.kill(pid, signal.SIGSTOP)  # it cannot read any more
        pub.publish(f"{topic}/lamp", b"ON")  # a new message: the lamp was switched on again
        wait_for(lambda: queued_bytes(pid, broker.port) > 0, timeout=20,
                 what="the second ON in the stopped agent's socket")  # fmt: skip
        agent.kill()  # SIGKILL: never read, never acked
        agent.start()
        wait_for(lambda: len(ons(home)) >= 2, timeout=RESEND_WAIT,
                 what=f"2nd ON stored (have {texts(home)}; log {agent.log()[-999:]})")  # fmt: skip
        got = ons(home)
        assert len(got) == 2 and got[0] != got[1], texts(home)
        if name in ("mosquitto", "rumqttd"):  # the MQTT 5 brokers: auto spoke MQTT 5
            assert "with MQTT 5" in agent.log()
    finally:
        pub.close()
        if agent.proc is not None and agent.proc.poll() is None:
            agent.stop()
