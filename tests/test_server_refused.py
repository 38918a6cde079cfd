"""A server answer that retrying cannot change (400 bad topic, 401/403, 404, a CONNACK that
refuses us) stops ``pushagent run`` at start with the server's own words and exit 2; an agent
that has been connected before backs off to the cap instead and ``status`` says why.

Real relays and a real mosquitto; the pure parts (which statuses, the text) without I/O.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import autostart
from agent.backoff import is_permanent
from agent.transports.refusal import refusal_text
from tests.helpers import ROOT, child_env, pushagent, wait_for
from tests.mosquitto import Mosquitto
from tests.mqtt_helpers import Agent
from tests.relay import Relay, module_relay

pytestmark = pytest.mark.timeout(120)


# --- the pure parts ------------------------------------------------------------------------


def test_only_answers_that_retrying_cannot_change_are_permanent() -> None:
    statuses = (200, 301, 400, 401, 403, 404, 405, 408, 409, 413, 429, 500, 502, 503, 504)
    assert [s for s in statuses if is_permanent(s)] == [400, 401, 403, 404]


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, b'{"code":40009,"http":400,"error":"invalid request: topic invalid"}',
         "server refused the subscription (HTTP 400, ntfy code 40009): "
         "invalid request: topic invalid"),
        (401, b'{"code":40101,"http":401,"error":"unauthorized","link":"https://x/docs"}',
         "server refused the subscription (HTTP 401, ntfy code 40101): unauthorized"),
        (404, b"404: Not Found", "server refused the subscription (HTTP 404): 404: Not Found"),
        (404, b"", "server refused the subscription (HTTP 404)"),
        (400, b"line one\nline two\x1b[31m", "server refused the subscription (HTTP 400): "
         "line one line two\\x1b[31m"),
        (400, b"x" * 1000, "server refused the subscription (HTTP 400): " + "x" * 200 + "..."),
    ],
)  # fmt: skip
def test_refusal_text_is_the_servers_own_error_on_one_line(
    status: int, body: bytes, expected: str
) -> None:
    assert refusal_text(status, body) == expected


def test_units_do_not_restart_an_agent_that_stopped_with_exit_2() -> None:
    """systemd must not restart an agent a server refused (it would only be refused again)."""
    shipped = (ROOT / "packaging/systemd/pushagent.service").read_text()
    written = autostart.systemd_unit(["/usr/bin/pushagent", "run"])
    for unit in (shipped, written):
        assert "RestartPreventExitStatus=2\n" in unit, unit
        assert "Restart=on-failure\n" in unit


# --- WebSocket / ntfy ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    yield from module_relay(tmp_path_factory, "refused")


def run_to_exit(home: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    """``pushagent run ARGS --notifier log`` to its exit; (exit code, its ``pushagent:`` lines)."""
    result = pushagent("run", *args, "--notifier", "log", home=home, env=env, timeout=30)
    err = result.stderr.decode()
    assert "Traceback" not in err, err
    return result.returncode, [line for line in err.splitlines() if line.startswith("pushagent:")]


@pytest.mark.parametrize(
    ("base", "topic", "needle"),
    [
        ("", "docs", "(HTTP 400, ntfy code 40009): topic 'docs' is reserved"),
        ("/no/such/base", "news", "(HTTP 404"),
    ],
)
def test_run_stops_at_start_when_the_relay_refuses(
    home: Path, relay: Relay, base: str, topic: str, needle: str
) -> None:
    code, lines = run_to_exit(home, "--server", relay.url + base, "--topic", topic)
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert needle in lines[0], lines[0]
    assert lines[0].startswith(f"pushagent: {relay.url}"), lines[0]


def test_run_stops_at_start_when_the_relay_wants_a_token(home: Path, tmp_path: Path) -> None:
    auth = tmp_path / "auth.json"
    auth.write_text('{"tokens": {}}')
    auth.chmod(0o600)
    relay = Relay(tmp_path / "r", args=["--auth-file", str(auth)]).start()
    try:
        code, lines = run_to_exit(home, "--server", relay.url, "--topic", "news")
    finally:
        assert relay.stop() == 0
    assert code == 2, lines
    assert len(lines) == 1 and "(HTTP 401" in lines[0], lines
    assert "pushagent login" in lines[0], lines  # what to do about it


def test_a_connected_agent_that_is_then_refused_backs_off_to_the_cap(
    home: Path, tmp_path: Path
) -> None:
    """Revoking anonymous reads ends the stream; the reconnect is answered 401. The agent was
    accepted before (a proxy or a token mid-rotation may be why), so it stays up, retries at
    the 60 s cap, and ``status`` shows the server's reason and the interval."""
    auth = tmp_path / "auth.json"
    auth.write_text('{"tokens": {}, "anonymous": {"read": ["news*"], "write": ["news*"]}}')
    auth.chmod(0o600)
    relay = Relay(tmp_path / "r", args=["--auth-file", str(auth)]).start()
    agent = Agent(home, relay.url, "--topic", "newsdesk")
    try:
        agent.start()
        done = subprocess.run(
            [sys.executable, "-m", "edge_relay", "token", "--auth-file", str(auth),
             "anonymous", "--read", "other*"],
            env=child_env(), capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        st = wait_for(lambda: (s := agent.status()).get("retry_in") == 60 and s, timeout=30,
                      what=f"backoff at the cap ({agent.log()[-2000:]})")  # fmt: skip
        assert st["state"] == "connecting"
        assert "(HTTP 401" in st["last_error"], st
        shown = pushagent("status", home=home)
        text = shown.stdout.decode()
        assert "last error:" in text and "(HTTP 401" in text and "retrying every 60 s" in text
        assert agent.proc is not None and agent.proc.poll() is None  # still running
        assert agent.stop() == 0
    finally:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.kill()
        assert relay.stop() == 0


# --- MQTT ------------------------------------------------------------------------------------


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, Path]]:
    pw = tmp_path / "mosq-passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "alice", "s3cret-pw"], check=True)
    os.chmod(pw, 0o644)  # mosquitto (running as us) must read it
    broker = Mosquitto(
        tmp_path / "mosq-auth", extra_config=f"allow_anonymous false\npassword_file {pw}\n"
    ).start()
    try:
        yield broker, pw
    finally:
        broker.stop()


def test_run_stops_at_start_when_the_broker_refuses(
    home: Path, auth_broker: tuple[Mosquitto, Path]
) -> None:
    broker, _ = auth_broker
    code, lines = run_to_exit(home, "--server", broker.url, "--topic", "t/#")
    assert code == 2, lines
    assert len(lines) == 1 and "refused the connection" in lines[0], lines
    assert "Not authorized" in lines[0] or "not authorized" in lines[0], lines
    code, lines = run_to_exit(home, "--server", "mqtt://alice@" + broker.url[7:], "--topic",
                              "t/#", env={"PUSHAGENT_PASSWORD": "wrong"})  # fmt: skip
    assert code == 2 and len(lines) == 1, lines


def test_a_connected_mqtt_agent_that_is_then_refused_backs_off_to_the_cap(
    home: Path, auth_broker: tuple[Mosquitto, Path]
) -> None:
    broker, pw = auth_broker
    (home / "config.toml").write_text('[auth]\nusername = "alice"\n')
    agent = Agent(home, broker.url, env={"PUSHAGENT_PASSWORD": "s3cret-pw"})
    try:
        agent.start()
        # the password changes on the broker while the agent runs
        subprocess.run(["mosquitto_passwd", "-b", str(pw), "alice", "new-pw"], check=True)
        broker.restart()
        st = wait_for(lambda: (s := agent.status()).get("retry_in") == 60 and s, timeout=30,
                      what=f"backoff at the cap ({agent.log()[-2000:]})")  # fmt: skip
        assert "refused the connection" in st["last_error"], st
        assert agent.proc is not None and agent.proc.poll() is None
        assert agent.stop() == 0
        assert "s3cret-pw" not in agent.log()
    finally:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.kill()


def test_a_relay_whose_upstream_refuses_it_keeps_serving_its_lan(
    tmp_path: Path, auth_broker: tuple[Mosquitto, Path]
) -> None:
    """The relay's upstream is the agent's MQTT transport; a refusal there must not end the
    relay (its LAN keeps pushing without the cloud): it retries at the cap and says why."""
    broker, _ = auth_broker
    relay = Relay(tmp_path / "relay", args=["--upstream", broker.url, "--upstream-topic",
                                            "cloud/#"]).start()  # fmt: skip
    try:
        wait_for(lambda: "retrying in 60 s" in relay.log.read_text(), timeout=30,
                 what=f"the upstream's backoff ({relay.log})")  # fmt: skip
        assert "refused the connection" in relay.log.read_text()
        assert relay.proc is not None and relay.proc.poll() is None
        up = relay.request("GET", "/v1/health")[1]["upstream"]
        assert up["state"] == "connecting" and "refused the connection" in up["last_error"], up
        relay.publish("lan", "still here")
        assert [m["message"] for m in relay.poll("lan")] == ["still here"]
    finally:
        assert relay.stop() == 0
