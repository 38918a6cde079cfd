"""Zero-loss delivery from a real mosquitto to real agent processes, through faults.

Every test asserts exact ids: each published id stored exactly once, and printed by
``--notifier log`` exactly once across all the agent's runs.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from tests.helpers import wait_for
from tests.mosquitto import Mosquitto
from tests.mqtt_helpers import Agent, Publisher, assert_exactly, envelope, stored_ids
from tests.netproxy import NetProxy


def ids(n: int, prefix: str = "m") -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(n)]


def wait_stored(home: Path, n: int, timeout: float = 60.0) -> list[str]:
    return wait_for(
        lambda: (s := stored_ids(home)) and len(set(s)) >= n and s, timeout=timeout,
        what=f"{n} messages stored",
    )  # fmt: skip


def wait_notified(agent: Agent, n: int, timeout: float = 30.0) -> None:
    wait_for(lambda: len(agent.notified()) >= n, timeout=timeout, what=f"{n} notified")


def test_offline_backlog_of_5000_is_stored_and_notified_once(home: Path, mosquitto: Mosquitto):
    agent = Agent(home, mosquitto.url).start()  # creates the persistent session
    assert agent.stop() == 0
    with Publisher(mosquitto.port) as pub:
        pub.publish("t/backlog", (envelope(i) for i in range(5000)))
    agent.start()
    assert_exactly(wait_stored(home, 5000), ids(5000))
    wait_notified(agent, 5000)
    assert agent.stop() == 0
    counts = agent.notified()
    assert sorted(counts) == ids(5000) and set(counts.values()) == {1}


@pytest.mark.slow
def test_agent_sigkilled_five_times_during_a_burst(home: Path, mosquitto: Mosquitto):
    agent = Agent(home, mosquitto.url).start()
    at_kill: list[int] = []
    with Publisher(mosquitto.port) as pub:
        for round_ in range(5):
            pub.publish(
                "t/burst", (envelope(i) for i in range(round_ * 1000, round_ * 1000 + 1000))
            )
            # kill while the agent is in the middle of this round
            wait_for(lambda r=round_: len(stored_ids(home)) > r * 1000 + 100, timeout=30,
                     what="agent busy with the burst")  # fmt: skip
            agent.kill()
            at_kill.append(len(stored_ids(home)) - round_ * 1000)
            agent.start()
    print("stored in the round when killed:", at_kill)
    assert any(n < 1000 for n in at_kill), f"no kill landed mid-burst: {at_kill}"
    assert_exactly(wait_stored(home, 5000), ids(5000))
    wait_notified(agent, 5000)
    assert agent.stop() == 0
    counts = agent.notified()
    dupes = {i: n for i, n in counts.items() if n != 1}
    assert sorted(counts) == ids(5000), "every id printed"
    assert not dupes, f"printed more than once: {list(dupes)[:10]}"


def test_broker_sigkilled_and_restarted_during_a_burst(home: Path, mosquitto: Mosquitto):
    """mosquitto persists every second (autosave_interval 1), so what it acked to the publisher
    in its last second may die with it: the publisher, like any QoS 1 client whose broker went
    away, sends the burst again after the restart. The agent must end with each id once."""
    agent = Agent(home, mosquitto.url).start()
    connected_at = time.time()
    saved = mosquitto.dir / "mosquitto.db"
    # the agent's session must have reached the broker's disk, as it would in production
    wait_for(lambda: saved.exists() and saved.stat().st_mtime > connected_at + 0.1,
             timeout=10, what="mosquitto saved the session")  # fmt: skip
    first = Publisher(mosquitto.port)
    first.publish("t/b", (envelope(i) for i in range(1000)))
    for i in range(1000, 2000):
        first.client.publish("t/b", envelope(i), qos=1)  # in flight when the broker dies
    mosquitto.kill()
    first.close()
    mosquitto.start()
    wait_for(lambda: agent.log().count("connected as") == 2, timeout=30, what="reconnected")
    assert "(session resumed)" in agent.log()
    with Publisher(mosquitto.port) as pub:
        pub.publish("t/b", (envelope(i) for i in range(2000)))
    assert_exactly(wait_stored(home, 2000), ids(2000))
    wait_notified(agent, 2000)
    assert agent.stop() == 0
    assert_exactly(list(agent.notified().elements()), ids(2000))  # each printed once
    assert "connection lost" in agent.log()


def test_stalled_link_is_noticed_within_one_and_a_half_keepalives(home: Path, mosquitto: Mosquitto):
    keepalive = 5
    (home / "config.toml").write_text(f"[mqtt]\nkeepalive = {keepalive}\n")
    with NetProxy("127.0.0.1", mosquitto.port) as proxy:
        agent = Agent(home, f"mqtt://127.0.0.1:{proxy.port}").start()
        with Publisher(mosquitto.port) as pub:
            pub.publish("t/s", (envelope(i) for i in range(50)))
            wait_stored(home, 50)
            proxy.stall()
            stalled_at = time.monotonic()
            pub.publish("t/s", (envelope(i) for i in range(50, 100)))  # stuck in the proxy
            wait_for(lambda: "dropping the link" in agent.log(), timeout=15,
                     what="the agent noticed the stall")  # fmt: skip
            noticed = time.monotonic() - stalled_at
            assert noticed <= 1.5 * keepalive + 0.2, f"noticed after {noticed:.1f} s"
            wait_for(lambda: agent.log().count("connected as") == 2, timeout=30,
                     what="reconnected through a fresh link")  # fmt: skip
            assert proxy.accepted == 2
            pub.publish("t/s", (envelope(i) for i in range(100, 150)))
            assert_exactly(wait_stored(home, 150), ids(150))
        wait_notified(agent, 150)
        assert agent.stop() == 0
    assert_exactly(list(agent.notified().elements()), ids(150))  # each printed once
    assert "nothing from the broker" in agent.log()


def test_locked_database_means_no_ack_and_recovery(home: Path, mosquitto: Mosquitto):
    agent = Agent(home, mosquitto.url).start()
    db = sqlite3.connect(home / "data" / "pushagent.db", timeout=10, isolation_level=None)
    try:
        db.execute("BEGIN EXCLUSIVE")  # no writer gets in: every commit meets "locked"
        with Publisher(mosquitto.port) as pub:
            pub.publish("t/l", (envelope(i) for i in range(300)))
        wait_for(lambda: "store busy" in agent.log(), timeout=30, what="agent saw the lock")
        # Nothing was committed, so nothing may have been acked: a crash now loses nothing,
        # the broker still holds all 300 for the session.
        agent.kill()
        db.execute("ROLLBACK")
    finally:
        db.close()
    agent.start()
    assert_exactly(wait_stored(home, 300), ids(300))
    wait_notified(agent, 300)
    assert agent.stop() == 0
    assert_exactly(list(agent.notified().elements()), ids(300))  # each printed once
