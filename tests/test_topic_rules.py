"""Topics are checked when the configuration is built, against the kind of server they are
for: ntfy's topic rule for http(s)/ws(s)/auto servers (server/server.go: topicRegex
``^[-_A-Za-z0-9]{1,64}$``), the MQTT filter rules (MQTT 5 section 4.7) for mqtt(s) ones.
A topic that breaks them is one line naming it and the rule, exit 2 — never a server's 400
in a reconnect loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.topics import topic_problem
from tests.helpers import pushagent


@pytest.mark.parametrize(
    ("kind", "topic", "ok"),
    [
        ("ntfy", "alerts", True),
        ("ntfy", "a-b_C9", True),
        ("ntfy", "x" * 64, True),
        ("ntfy", "x" * 65, False),
        ("ntfy", "my topic", False),
        ("ntfy", "home/door", False),
        ("ntfy", "a,b", False),
        ("ntfy", "caf\u00e9", False),
        ("ntfy", "", False),
        ("ntfy", "home/#", False),
        ("mqtt", "home/+/door", True),
        ("mqtt", "home/#", True),
        ("mqtt", "#", True),
        ("mqtt", "my topic", True),  # MQTT topics may contain spaces (4.7.3)
        ("mqtt", "a//b", True),  # a zero-length level is allowed (4.7.1)
        ("mqtt", "a/#/b", False),
        ("mqtt", "a#", False),
        ("mqtt", "a+/b", False),
        ("mqtt", "", False),
        ("mqtt", "a\0b", False),
    ],
)
def test_topic_rules_by_server_kind(kind: str, topic: str, ok: bool) -> None:
    problem = topic_problem(kind, topic)
    assert (problem is None) == ok, problem


def errors(result: object) -> list[str]:
    err = result.stderr.decode()  # type: ignore[attr-defined]
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line]


def test_run_with_a_topic_an_ntfy_server_refuses_is_one_line_exit_2(home: Path) -> None:
    result = pushagent("run", "--server", "http://127.0.0.1:9", "--topic", "my topic",
                       "--notifier", "log", home=home)  # fmt: skip
    assert result.returncode == 2
    (line,) = errors(result)
    assert line.startswith("pushagent: command line: 'topics': 'my topic' "), line
    assert "1-64 letters, digits, '-' or '_'" in line, line
    assert "http://127.0.0.1:9" in line, line


def test_config_file_topic_is_checked_by_config_show(home: Path) -> None:
    cfg = home / "config.toml"
    cfg.write_text('servers = ["http://relay.lan:8080"]\ntopics = ["ok", "my topic"]\n')
    result = pushagent("config", "show", home=home)
    assert result.returncode == 2
    (line,) = errors(result)
    assert line.startswith(f"pushagent: {cfg}: 'topics': 'my topic' "), line
    assert "1-64 letters" in line and "http://relay.lan:8080" in line, line


def test_every_error_at_once_includes_the_topic(home: Path) -> None:
    cfg = home / "config.toml"
    cfg.write_text('servers = ["wss://ntfy.example"]\ntopics = ["a b"]\nnotifer = "log"\n')
    result = pushagent("config", "show", home=home)
    assert result.returncode == 2
    lines = errors(result)
    assert len(lines) == 2, lines
    assert any("unknown key 'notifer'" in line for line in lines), lines
    assert any("'topics': 'a b'" in line for line in lines), lines


def test_mqtt_filters_follow_the_mqtt_rules(home: Path) -> None:
    cfg = home / "config.toml"
    cfg.write_text('servers = ["mqtt://alice:pw@broker.lan"]\ntopics = ["home/#/door"]\n')
    result = pushagent("config", "show", home=home)
    assert result.returncode == 2
    (line,) = errors(result)
    assert "'topics': 'home/#/door'" in line and "'#' must be a whole last level" in line
    assert "mqtt://broker.lan" in line and "pw" not in line, line  # no password in errors
    cfg.write_text('servers = ["mqtt://broker.lan"]\ntopics = ["home/+/door", "my topic"]\n')
    assert pushagent("config", "show", home=home).returncode == 0


def test_send_checks_an_ntfy_topic_before_any_request(home: Path) -> None:
    """Port 9 (discard) is closed here: the line must come before any connection attempt."""
    result = pushagent("send", "--server", "http://127.0.0.1:9", "my topic", "hi", home=home)
    assert result.returncode == 2
    (line,) = errors(result)
    assert line == ("pushagent: TOPIC: 'my topic': an ntfy topic is 1-64 letters, digits, '-' "
                    "or '_' (^[-_A-Za-z0-9]{1,64}$)"), line  # fmt: skip
