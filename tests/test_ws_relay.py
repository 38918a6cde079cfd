"""The agent over WebSocket against a real relay process: SIGKILL the agent, then the relay.

Everything is real: an ``edge-relay`` subprocess, ``pushagent run --notifier log``
subprocesses whose stdout lines are the notifications, SIGKILL at arbitrary moments.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import wait_for
from tests.relay_proc import AgentProc, Publisher, RelayProc

N = 5000
TOPIC = "proof"

pytestmark = pytest.mark.slow


def _assert_exactly_once(agent: AgentProc, ids: list[str]) -> None:
    want = set(ids)
    assert len(want) == N

    def complete() -> bool:
        return set(agent.notified()) >= want

    wait_for(complete, timeout=90, interval=0.2, what=f"all {N} notified\n{agent.stderr()}")
    seen = agent.notified()
    twice = [i for i, n in Counter(seen).items() if n > 1]
    assert not twice, f"{len(twice)} ids notified more than once, e.g. {twice[:5]}"
    assert set(seen) == want, f"unexpected ids: {sorted(set(seen) - want)[:5]}"


def test_agent_sigkilled_three_times_gets_each_message_once(tmp_path: Path) -> None:
    relay = RelayProc(tmp_path / "relay").start()
    agent = AgentProc(tmp_path / "agent", ["--server", relay.url, "--topic", TOPIC])
    agent.home.mkdir()
    pub = Publisher(relay.port)
    ids: list[str] = []
    try:
        agent.start()
        wait_for(lambda: (agent.home / "data" / "status.json").exists(), timeout=30)
        done = threading.Event()

        def publish() -> None:
            for i in range(N):
                ids.append(pub.publish(TOPIC, f"message {i}"))
            done.set()

        thread = threading.Thread(target=publish)
        thread.start()
        for mark in (N // 5, 2 * N // 5, 3 * N // 5):
            # Kill while messages are streaming in: after the agent showed some of this stretch.
            wait_for(lambda m=mark: len(agent.notified()) >= m - 400, timeout=60, interval=0.01)
            agent.kill()
            agent.start()
        thread.join(timeout=90)
        assert done.is_set()
        _assert_exactly_once(agent, ids)
        assert agent.starts == 4
    finally:
        pub.close()
        agent.stop()
        relay.stop()


def test_relay_sigkilled_twice_during_a_backlog(tmp_path: Path) -> None:
    relay = RelayProc(tmp_path / "relay").start()
    agent = AgentProc(tmp_path / "agent", ["--server", relay.url, "--topic", TOPIC])
    agent.home.mkdir()
    pub = Publisher(relay.port)
    try:
        agent.start()
        wait_for(lambda: b"subscribed" in (agent.home / "agent-1.err").read_bytes(), timeout=30)
        agent.kill()  # down while the backlog builds up
        ids = [pub.publish(TOPIC, f"backlog {i}") for i in range(N)]
        pub.close()
        agent.start()
        for mark in (N // 4, N // 2):
            wait_for(lambda m=mark: len(agent.notified()) >= m, timeout=60, interval=0.01)
            relay.kill()
            relay.start()
        _assert_exactly_once(agent, ids)
    finally:
        pub.close()
        agent.stop()
        relay.stop()
