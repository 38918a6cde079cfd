"""The agent over WebSocket against a real relay process: SIGKILL the agent, then the relay.

Everything is real: an ``edge-relay`` subprocess, ``pushagent run --notifier log``
subprocesses whose stdout lines are the notifications, SIGKILL at arbitrary moments.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from agent.notify import LogNotifier
from tests.helpers import child_env, free_port, pushagent, spawn, wait_for
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


def _assert_only_the_slice_in_flight_repeats(agent: AgentProc) -> None:
    """What a SIGKILL may repeat, by design (agent.notify.LogNotifier, agent.handoff): the one
    slice written to stdout before its hand-off mark — never more than ``hand_off_size`` ids,
    and exactly the last ones the killed run printed, shown again first by the next run.
    Showing that slice again is the price of never losing it; anything else twice is a bug."""
    printed: list[str] = []
    for n, run in enumerate(agent.runs(), start=1):
        seen = set(printed)
        again = 0
        while again < len(run) and run[again] in seen:
            again += 1
        assert again <= LogNotifier.hand_off_size, f"run {n} repeated {again} ids"
        assert run[:again] == printed[len(printed) - again :], f"run {n} repeated ids out of order"
        later = [i for i in run[again:] if i in seen]
        assert not later, f"run {n} repeated {len(later)} ids not in flight: {later[:5]}"
        printed += run[again:]


def test_agent_sigkilled_three_times_repeats_at_most_the_slice_in_flight(tmp_path: Path) -> None:
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
            # Kill while messages stream in, timed by the publisher's progress: timing it by the
            # agent's own output would aim every kill at the instant right after a hand-off.
            wait_for(lambda m=mark: len(ids) >= m, timeout=60, interval=0.005)
            agent.kill()
            agent.start()
        thread.join(timeout=90)
        assert done.is_set()
        want = set(ids)
        assert len(want) == N
        wait_for(lambda: set(agent.notified()) >= want, timeout=90, interval=0.2,
                 what=f"all {N} notified\n{agent.stderr()}")  # fmt: skip
        _assert_only_the_slice_in_flight_repeats(agent)
        assert set(agent.notified()) == want
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

        # pushagent status answers from the running daemon ...
        def status() -> tuple[int, dict[str, object]]:
            r = pushagent("status", "--json", home=agent.home)
            return r.returncode, json.loads(r.stdout)

        # The daemon rewrites its status file on a state change at once and for a new last
        # message within a second: wait for both, not just the first.
        wait_for(lambda: status()[1].get("state") == "connected"
                 and status()[1].get("last_message_id") == ids[-1], timeout=30)  # fmt: skip
        code, st = status()
        assert code == 0 and st["server"] == relay.url and st["messages"] == N
        assert st["last_message_id"] == ids[-1] and isinstance(st["since"], float)
        # ... and a SIGKILLed daemon's leftover file reads as "not running"
        agent.kill()
        code, st = status()
        assert code == 3 and st["state"] == "offline" and st["running"] is False
    finally:
        pub.close()
        agent.stop()
        relay.stop()


def test_token_login_bearer_and_receipts_to_a_relay_with_auth(tmp_path: Path) -> None:
    auth = tmp_path / "auth.json"
    made = subprocess.run(
        [sys.executable, "-m", "edge_relay", "token", "--auth-file", str(auth), "add", "laptop",
         "--read", "tok*", "--write", "tok*"],
        env=child_env(), capture_output=True, check=True,
    )  # fmt: skip
    token = made.stdout.decode().strip()
    relay = RelayProc(tmp_path / "relay", keepalive=2,
                      extra_args=["--auth-file", str(auth)]).start()  # fmt: skip
    home = tmp_path / "agent"
    home.mkdir()
    kr = {"PYTHON_KEYRING_BACKEND": "tests.file_keyring.FileKeyring",
          "EDGEPUSH_TEST_KEYRING": str(tmp_path / "keyring.json")}  # fmt: skip
    agent = AgentProc(home, ["--server", relay.url, "--topic", "tok1"], env=kr)
    try:
        agent.start()  # no token yet: refused, with the way out in the log
        hint = f"pushagent login {relay.url} --token-stdin"
        wait_for(
            lambda: hint in agent.stderr(), timeout=30, what=f"the login hint\n{agent.stderr()}"
        )
        agent.stop()

        r = pushagent("login", relay.url.replace("http", "ws"), "--token-stdin",
                      home=home, input=token.encode() + b"\n", env=kr)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert token in json.loads((tmp_path / "keyring.json").read_text()).values()

        agent.start()
        wait_for(lambda: b"subscribed" in (home / "agent-2.err").read_bytes(), timeout=30)
        pub = Publisher(relay.port, token)
        mid = pub.publish("tok1", "for the laptop")
        pub.close()
        wait_for(lambda: mid in agent.notified(), timeout=30, what=agent.stderr())

        def receipts() -> list[str]:
            req = urllib.request.Request(f"{relay.url}/v1/messages/{mid}/receipts",
                                         headers={"Authorization": f"Bearer {token}"})  # fmt: skip
            with urllib.request.urlopen(req, timeout=10) as resp:
                return [r["state"] for r in json.loads(resp.read())["receipts"]]

        wait_for(lambda: "delivered" in receipts(), timeout=30, what="the delivered receipt")
        assert token not in agent.stderr()
    finally:
        agent.stop()
        relay.stop()


def test_demo_agent_shows_the_first_message(tmp_path: Path) -> None:
    """The README's demo: the relay and a pushagent subscribed to it; curl → a notification."""
    out = tmp_path / "demo.out"
    port = free_port()
    with out.open("wb") as f:
        proc = spawn("edge_relay.demo", ["--port", str(port), "--data-dir", str(tmp_path / "d")],
                     env=child_env(), stdout=f, stderr=f)  # fmt: skip
    try:
        wait_for(lambda: "Ctrl-C" in out.read_text(), timeout=30, what="demo instructions")
        assert "A pushagent is subscribed" in out.read_text()
        wait_for(lambda: "subscribed to demo" in out.read_text(), timeout=30,
                 what=f"the demo's agent subscribed\n{out.read_text()}")  # fmt: skip
        req = urllib.request.Request(f"http://127.0.0.1:{port}/demo", data=b"first light")
        with urllib.request.urlopen(req, timeout=10) as r:
            mid = json.loads(r.read())["id"]
        wait_for(lambda: f'"id":"{mid}"' in out.read_text(), timeout=30,
                 what=f"the agent's notification line\n{out.read_text()}")  # fmt: skip
        line = next(x for x in out.read_text().splitlines() if f'"id":"{mid}"' in x)
        assert json.loads(line)["message"] == "first light"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, out.read_text()
