"""`pushagent` / `edge-relay` as a user runs them: help, version, history, config, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent import __version__
from agent.envelope import FIELDS, from_fields
from agent.store import Store
from tests.helpers import child_env, pushagent

NOW = int(time.time())


def run_module(module: str, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=child_env(home),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[bytes], *needles: str) -> str:
    err = result.stderr.decode()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], err
    return lines[0]


@pytest.fixture
def filled(home: Path) -> Path:
    """A home whose store holds five messages over three topics, oldest first."""
    rows = [
        {"id": "m1", "time": 1_000_000_000, "topic": "home", "message": "garage open"},
        {"id": "m2", "time": NOW - 7200, "topic": "home/door", "message": "front door",
         "title": "Door", "priority": 5, "tags": ["door"], "color": "red"},
        {"id": "m3", "time": NOW - 600, "topic": "homework", "message": "due friday"},
        {"id": "m4", "time": NOW - 60, "topic": "office/x", "message": "printer jam\x1b[31m"},
        {"id": "m5", "time": NOW - 5, "topic": "home/door/back", "message": "back door"},
    ]  # fmt: skip
    with Store(home / "data" / "pushagent.db") as s:
        s.insert_batch([from_fields(r) for r in rows], source="test")
        s.record_states([("m2", "clicked", NOW), ("m5", "displayed", NOW)])
    return home


def history_ids(home: Path, *args: str) -> list[str]:
    result = pushagent("history", "--json", *args, home=home)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert isinstance(rows, list)
    return [r["id"] for r in rows]


# --- help and version ------------------------------------------------------------------------


@pytest.mark.parametrize(("module", "prog"), [("agent", "pushagent"), ("edge_relay", "edge-relay")])
def test_help_and_version(home: Path, module: str, prog: str) -> None:
    version = run_module(module, "--version", home=home)
    assert (version.returncode, version.stdout.strip()) == (0, f"{prog} {__version__}")
    helped = run_module(module, "--help", home=home)
    assert helped.returncode == 0
    assert helped.stdout.startswith(f"usage: {prog}")
    assert "--version" in helped.stdout


def test_pushagent_help_lists_history_and_config(home: Path) -> None:
    out = run_module("agent", "--help", home=home).stdout
    assert "history" in out and "config" in out
    sub = run_module("agent", "history", "--help", home=home)
    assert sub.returncode == 0
    for option in ("--topic", "--since", "--limit", "--search", "--json"):
        assert option in sub.stdout


# --- history ------------------------------------------------------------------------------------


def test_history_json_is_one_array_of_envelopes_with_state(filled: Path) -> None:
    result = pushagent("history", "--json", "--since", "all", home=filled)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)  # the whole output is ONE JSON document
    assert [r["id"] for r in rows] == ["m1", "m2", "m3", "m4", "m5"]  # newest last
    for r in rows:
        assert {"id", "time", "topic", "message", "priority", "state"} <= r.keys()
        assert set(r) <= {*FIELDS, "state", "color"}
    m2 = rows[1]
    assert (m2["title"], m2["priority"], m2["tags"], m2["color"]) == ("Door", 5, ["door"], "red")
    assert [r["state"] for r in rows] == [
        "received",
        "clicked",
        "received",
        "received",
        "displayed",
    ]
    assert rows[3]["message"] == "printer jam\x1b[31m"


def test_history_topic_filters(filled: Path) -> None:
    assert history_ids(filled, "--topic", "home/#") == ["m1", "m2", "m5"]
    assert history_ids(filled, "--topic", "home/door") == ["m2"]
    assert history_ids(filled, "--topic", "homework", "--topic", "office/x") == ["m3", "m4"]
    assert history_ids(filled, "--topic", "nothing") == []


def test_history_since_forms(filled: Path) -> None:
    assert history_ids(filled, "--since", "m3") == ["m4", "m5"]
    assert history_ids(filled, "--since", str(NOW - 700)) == ["m3", "m4", "m5"]
    assert history_ids(filled, "--since", "1h") == ["m3", "m4", "m5"]
    assert history_ids(filled, "--since", "3h") == ["m2", "m3", "m4", "m5"]
    assert history_ids(filled, "--since", "all") == ["m1", "m2", "m3", "m4", "m5"]


def test_history_limit_keeps_newest_and_search_is_full_text(filled: Path) -> None:
    assert history_ids(filled, "--limit", "2") == ["m4", "m5"]
    assert history_ids(filled, "--search", "door") == ["m2", "m5"]
    assert history_ids(filled, "--search", "door", "--topic", "home/door/#") == ["m2", "m5"]
    assert history_ids(filled, "--search", "door", "--topic", "home/door/back") == ["m5"]
    assert history_ids(filled, "--search", 'NEAR( "door" -*') == []


def test_history_table_is_readable_and_escapes_control_characters(filled: Path) -> None:
    result = pushagent("history", "--since", "all", home=filled)
    assert result.returncode == 0
    lines = result.stdout.decode().splitlines()
    assert lines[0].split() == ["TIME", "TOPIC", "P", "STATE", "MESSAGE"]
    assert len(lines) == 6
    assert "Door: front door" in lines[2] and "clicked" in lines[2]
    assert "\x1b" not in result.stdout.decode()
    assert "printer jam\\x1b[31m" in lines[4]


def test_history_table_columns_hold_the_longest_state(filled: Path) -> None:
    """``acknowledged`` and ``undecryptable`` (an encrypted message without its key) are
    longer than the other states: the MESSAGE column still starts where its header does."""
    with Store(filled / "data" / "pushagent.db") as s:
        s.record_states([("m3", "acknowledged", NOW)])
    lines = pushagent("history", "--since", "all", home=filled).stdout.decode().splitlines()
    column = lines[0].index("MESSAGE")
    texts = ["garage open", "Door: front door", "due friday", "printer jam", "back door"]
    assert [line[column:] for line in lines[1:]] == [
        t + ("\\x1b[31m" if t == "printer jam" else "") for t in texts
    ], lines
    assert "acknowledged" in lines[3]


def test_history_on_an_empty_store(home: Path) -> None:
    assert history_ids(home) == []
    out = pushagent("history", home=home).stdout.decode()
    assert out.startswith("no messages stored"), out
    with Store(home / "data" / "pushagent.db") as s:
        assert s.count() == 0
    assert pushagent("history", home=home).stdout == b"no messages stored\n"


def test_history_filter_matching_nothing_says_so(filled: Path) -> None:
    result = pushagent("history", "--topic", "nothing", home=filled)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"no stored message matches (5 stored)\n"
    result = pushagent("history", "--search", "zebra", "--since", "all", home=filled)
    assert result.stdout == b"no stored message matches (5 stored)\n"


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


NOTHING_TO_WRITE = [
    ("history",), ("history", "--json"), ("status",), ("config", "show"), ("config", "path"),
    ("read", "--all"), ("resume",), ("autostart", "status"), ("stats",), ("stats", "--json"),
]  # fmt: skip


@pytest.mark.parametrize("command", NOTHING_TO_WRITE)
def test_commands_without_config_or_agent_create_no_files(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """PUSHAGENT_HOME empty, and without it a user home with nothing in it: nothing appears."""
    home = tmp_path / "agent"
    home.mkdir()
    result = pushagent(*command, home=home)
    assert result.returncode in (0, 3), result.stderr  # status: 3 = none running/enabled
    assert tree(home) == []
    user = tmp_path / "user"
    user.mkdir()
    env = {k: v for k, v in child_env().items() if not k.startswith("XDG_")}
    result = subprocess.run(
        [sys.executable, "-m", "agent", *command], env={**env, "HOME": str(user)},
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode in (0, 3), result.stderr
    assert tree(user) == []
    if command[0] == "history":
        db = user / ".local" / "share" / "pushagent" / "pushagent.db"
        if "--json" in command:
            assert result.stdout == b"[]\n"
        else:
            assert result.stdout.decode() == f"no messages stored (no database yet at {db})\n"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--since", "yesterday"), "--since"),
        (("--since", "2 hours"), "--since"),
        (("--limit", "0"), "--limit"),
        (("--limit", "-5"), "--limit"),
    ],
)
def test_bad_history_arguments_exit_2(filled: Path, args: tuple[str, ...], needle: str) -> None:
    result = pushagent("history", *args, home=filled)
    assert result.returncode == 2
    one_error_line(result, needle)
    assert result.stdout == b""


def test_non_numeric_limit_is_an_argparse_error(filled: Path) -> None:
    result = pushagent("history", "--limit", "many", home=filled)
    assert result.returncode == 2
    assert "--limit" in result.stderr.decode().strip().splitlines()[-1]


# --- usage errors name the command that was run ----------------------------------------------


@pytest.mark.parametrize(
    ("args", "usage"),
    [
        (("history", "--bogus"), "usage: pushagent history"),
        (("send", "t", "m", "--nope", "1"), "usage: pushagent send"),
        (("config", "show", "extra"), "usage: pushagent config"),
        (("autostart", "enable", "--bogus"), "usage: pushagent autostart"),
    ],
)
def test_unknown_flag_prints_the_subcommand_usage(
    home: Path, args: tuple[str, ...], usage: str
) -> None:
    result = pushagent(*args, home=home)
    assert result.returncode == 2
    err = result.stderr.decode()
    assert err.startswith(usage), err
    assert "unrecognized arguments" in err.splitlines()[-1], err


@pytest.mark.parametrize(
    ("args", "usage"),
    [
        (("serve", "--bogus"), "usage: edge-relay serve"),
        (("token", "add", "x", "--bogus"), "usage: edge-relay token add"),
    ],
)
def test_relay_unknown_flag_prints_the_subcommand_usage(
    home: Path, args: tuple[str, ...], usage: str
) -> None:
    result = run_module("edge_relay", *args, home=home)
    assert result.returncode == 2
    assert result.stderr.startswith(usage), result.stderr
    assert "unrecognized arguments: --bogus" in result.stderr.splitlines()[-1], result.stderr


@pytest.mark.parametrize("priority", ["0", "9", "-1", "loud", "6"])
def test_send_priority_outside_1_to_5_is_exit_2_with_the_allowed_values(
    home: Path, priority: str
) -> None:
    result = pushagent("send", "--server", "mqtt://127.0.0.1:1", "--priority", priority,
                       "t", "m", home=home)  # fmt: skip
    assert result.returncode == 2, result.stderr
    line = one_error_line(result, "--priority", repr(priority))
    assert "1-5" in line and "min, low, default, high, urgent" in line, line
    assert result.stdout == b""


@pytest.mark.parametrize(
    "backend", ["keyring.backends.null.Keyring", "keyring.backends.fail.Keyring"]
)
def test_login_with_a_keyring_that_keeps_nothing_says_so(home: Path, backend: str) -> None:
    """keyring's null backend accepts a password and keeps nothing: that is no keyring, so
    the secret goes to the 0600 file instead, in one line that says so
    (tests/test_keyring_fallback.py has the agent reading it back)."""
    env = {"PYTHON_KEYRING_BACKEND": backend}
    for args, stdin in (
        (("login", "mqtt://broker.lan", "--user", "ann"), b"hunter2\n"),
        (("login", "http://relay.lan:8080", "--token-stdin"), b"tk_abc\n"),
    ):
        result = pushagent(*args, home=home, input=stdin, env=env)
        assert result.returncode == 0, result.stderr
        line = one_error_line(result, "no OS keyring here: stored the ")
        assert str(home / "secrets.json") in line and "(mode 0600)" in line, line
    assert tree(home) == ["secrets.json"]  # no login index: the keyring has no entries


def test_relay_serve_on_a_busy_port_is_one_line_exit_2(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "edge_relay", "serve", "--listen", f"127.0.0.1:{port}",
             "--data-dir", str(tmp_path / "d"), "--no-advertise"],
            env=child_env(), capture_output=True, timeout=30, check=False,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    err = result.stderr.decode().splitlines()
    assert len(err) == 1, result.stderr.decode()
    assert err[0].startswith(f"edge-relay: --listen 127.0.0.1:{port}: "), err
    assert "address already in use" in err[0], err


# --- bad database and config files ----------------------------------------------------------------


def test_corrupt_database_is_one_line_exit_2(home: Path) -> None:
    db = home / "data" / "pushagent.db"
    db.parent.mkdir()
    db.write_bytes(b"\x00garbage, not SQLite" * 500)
    result = pushagent("history", home=home)
    assert result.returncode == 2
    one_error_line(result, str(db), "corrupt")
    assert db.read_bytes() == b"\x00garbage, not SQLite" * 500  # left alone for the user


def test_read_only_database_is_one_line_exit_2(filled: Path) -> None:
    data = filled / "data"
    db = data / "pushagent.db"
    argv = [sys.executable, "-m", "agent", "history"]
    if os.geteuid() == 0:
        # root ignores file modes, so make the folder a read-only mount (EROFS) in a private
        # mount namespace of the child: a real read-only file system, nothing simulated.
        script = f'mount --bind "{data}" "{data}" && mount -o remount,bind,ro "{data}" && exec "$@"'
        argv = ["unshare", "--mount", "sh", "-c", script, "sh", *argv]
    else:
        db.chmod(0o444)
        data.chmod(0o555)
    try:
        result = subprocess.run(
            argv, env=child_env(filled), capture_output=True, timeout=30, check=False
        )
    finally:
        data.chmod(0o755)
        db.chmod(0o644)
    assert result.returncode == 2, result.stderr
    line = one_error_line(result, str(db))
    assert "writable" in line or "read-only" in line
    with Store(db) as s:
        assert s.count() == 5


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ('notifer = "log"\n', ["unknown key 'notifer'", "did you mean 'notifier'"]),
        ('[mqtt]\nkeepalive = "x"\n', ["'mqtt.keepalive'", "'x'"]),
        ("[mqtt]\nkeepalive = 1\n", ["'mqtt.keepalive'", "not 1"]),
        ('servers = ["mqtt://x"\n', ["not valid TOML"]),
        ("[store]\nmax_mesages = 5\n", ["unknown key 'store.max_mesages'"]),
    ],
)
def test_config_file_with_a_typo_is_one_line_exit_2(
    home: Path, text: str, needles: list[str]
) -> None:
    config = home / "config.toml"
    config.write_text(text)
    for command in (("history",), ("config", "show")):
        result = pushagent(*command, home=home)
        assert result.returncode == 2
        one_error_line(result, str(config), *needles)


def test_explicit_missing_config_file_is_exit_2(home: Path) -> None:
    missing = home / "nope.toml"
    result = pushagent("--config", str(missing), "history", home=home)
    assert result.returncode == 2
    one_error_line(result, str(missing), "not found")


# --- config path / show ---------------------------------------------------------------------


def test_config_path_even_when_missing_or_broken(home: Path, tmp_path: Path) -> None:
    result = pushagent("config", "path", home=home)
    assert result.stdout.decode().strip() == str(home / "config.toml")
    (home / "config.toml").write_text("this is = = broken")
    assert pushagent("config", "path", home=home).returncode == 0
    other = tmp_path / "other.toml"
    result = pushagent("config", "path", home=home, env={"PUSHAGENT_CONFIG": str(other)})
    assert (result.returncode, result.stdout.decode().strip()) == (0, str(other))
    result = pushagent("config", "path", "--config", str(other), home=home)
    assert result.stdout.decode().strip() == str(other)


def test_config_show_masks_secrets(home: Path) -> None:
    (home / "config.toml").write_text('notifier = "log"\n[auth]\nusername = "ann"\n')
    result = pushagent(
        "config", "show", home=home,
        env={"PUSHAGENT_PASSWORD": "hunter2-secret", "PUSHAGENT_TOKEN": "tk_abcdef"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "hunter2" not in out and "tk_abcdef" not in out
    shown = json.loads(out)
    assert shown["auth"] == {"username": "ann", "password": "********", "token": "********"}
    assert shown["notifier"] == "log"
    assert shown["paths"]["database"] == str(home / "data" / "pushagent.db")
