"""``pushagent status``: answers from the daemon's status file, says when none is running."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agent.commands import status as status_cmd
from agent.envelope import from_fields
from agent.store import Store
from tests.helpers import child_env, complete_lines, pushagent, wait_for
from tests.relay_proc import RELAY_TOML, AgentProc, Publisher, RelayProc


def _status(home: Path) -> tuple[int, dict[str, object], str]:
    r = pushagent("status", "--json", home=home)
    text = pushagent("status", home=home).stdout.decode()
    return r.returncode, json.loads(r.stdout), text


def test_no_daemon_ever(home: Path) -> None:
    code, out, text = _status(home)
    assert code == 3
    assert out["state"] == "offline" and out["running"] is False
    assert (out["outbox"], out["messages"]) == (0, 0)
    assert set(out) >= {"server", "state", "since", "last_message_id", "outbox", "messages"}
    assert "no pushagent daemon is running" in text


def test_stale_pid_means_not_running(home: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    data = home / "data"
    data.mkdir()
    (data / "status.json").write_text(
        json.dumps(
            {
                "server": "http://relay:8080",
                "state": "connected",
                "since": 1.0,
                "last_message_id": "x",
                "pid": dead.pid,
            }
        )
    )
    code, out, text = _status(home)
    assert code == 3 and out["state"] == "offline" and out["stale_pid"] == dead.pid
    assert out["server"] == "http://relay:8080"
    assert f"stale status from pid {dead.pid}" in text


def test_running_daemon_state_and_store_counts(home: Path) -> None:
    data = home / "data"
    with Store(data / "pushagent.db") as store:
        msgs = [from_fields({"id": f"m{i}", "topic": "t", "message": "x"}) for i in range(3)]
        store.insert_batch(msgs, receipt_destination="r")
    since = time.time() - 30
    (data / "status.json").write_text(
        json.dumps(
            {
                "server": "http://relay:8080",
                "state": "connected",
                "since": since,
                "last_message_id": "m2",
                "pid": os.getpid(),
            }
        )
    )
    code, out, text = _status(home)
    assert code == 0 and out["running"] is True
    assert (out["server"], out["state"], out["since"]) == ("http://relay:8080", "connected", since)
    assert (out["last_message_id"], out["outbox"], out["messages"]) == ("m2", 3, 3)
    assert "state:        connected since" in text and "outbox:       3 waiting" in text


# --- the store's health (agent.health): a store that cannot commit is not "connected, fine" -----


def test_daemons_store_record_and_a_full_file_system_show_in_report() -> None:
    raw = {"server": "s", "state": "connected", "since": 1.0, "pid": 1, "store": "locked",
           "store_error": "db: database is locked", "store_since": 2.0}  # fmt: skip
    counts = {"outbox": 0, "messages": 0}
    out = status_cmd.report(raw, alive=True, counts=counts, free=10**9)
    assert (out["store"], out["store_error"], out["store_since"]) == (
        "locked", "db: database is locked", 2.0)  # fmt: skip
    out = status_cmd.report({**raw, "store": "ok"}, alive=True, counts=counts, free=4096)
    assert (out["state"], out["store"]) == ("connected", "disk full")
    out = status_cmd.report(
        None,
        alive=False,
        counts={
            **counts,
            "store_error": "x: the database is read-only (attempt to write a readonly database)",
        },
        free=10**9,
    )
    assert out["store"] == "read-only"
    assert status_cmd.report(None, alive=False, counts=counts, free=10**9)["store"] == "ok"


def _relay(tmp_path: Path) -> RelayProc:
    relay = RelayProc(tmp_path / "relay")
    relay.config.write_text(RELAY_TOML + "message_size = 2000000\n")
    return relay.start()


def test_a_locked_store_shows_in_status_and_clears(tmp_path: Path, home: Path) -> None:
    relay = _relay(tmp_path)
    agent = AgentProc(home, ["--server", relay.url, "--topic", "st1"])
    pub = Publisher(relay.port)
    db = home / "data" / "pushagent.db"
    try:
        agent.start()
        wait_for(lambda: "subscribed" in agent.stderr(), timeout=30, what="subscribed")
        first = pub.publish("st1", "before")
        wait_for(lambda: agent.notified() == [first], timeout=30, what=agent.stderr())
        assert _status(home)[1]["store"] == "ok"
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # a real writer holding the lock (a stuck backup)
        try:
            second = pub.publish("st1", "while locked")
            # busy_timeout is 5 s: then the commit fails with StoreBusy and is retried
            wait_for(lambda: _status(home)[1]["store"] == "locked", timeout=30,
                     what="store: locked")  # fmt: skip
            code, out, text = _status(home)
            assert code == 0 and out["state"] == "connected" and "database is locked" in (
                out["store_error"])  # fmt: skip
            assert "store:        locked since " in text
            assert agent.notified() == [first]
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        wait_for(lambda: _status(home)[1]["store"] == "ok", timeout=30, what="store: ok again")
        wait_for(lambda: agent.notified() == [first, second], timeout=30, what=agent.stderr())
        code, out, text = _status(home)
        assert out["store_error"] is None and "store:        ok" in text
    finally:
        pub.close()
        agent.stop()
        relay.stop()


def test_a_full_disk_shows_in_status_and_clears(tmp_path: Path, home: Path) -> None:
    """The data dir is a real 8 MiB tmpfs (a private mount namespace of the agent), filled
    to the last byte: no batch can commit and the status file cannot be rewritten either."""
    relay = _relay(tmp_path)
    data = home / "data"
    data.mkdir(mode=0o700)
    err = (home / "agent.err").open("wb")
    out_file = (home / "agent.out").open("wb")
    script = 'mount -t tmpfs -o size=8m,mode=0700 tmpfs "$0" && exec "$@"'
    agent = subprocess.Popen(
        ["unshare", "--mount", "sh", "-c", script, str(data), sys.executable, "-m", "agent",
         "run", "--server", relay.url, "--topic", "st2", "--notifier", "log"],
        env=child_env(home), stdout=out_file, stderr=err,
    )  # fmt: skip
    inside = Path(f"/proc/{agent.pid}/root") / data.relative_to("/")

    def status() -> dict[str, Any]:
        r = subprocess.run(
            ["nsenter", "-t", str(agent.pid), "-m", sys.executable, "-m", "agent", "status",
             "--json"], env=child_env(home), capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        return dict(json.loads(r.stdout))

    def shown() -> list[str]:
        lines = complete_lines((home / "agent.out").read_bytes())
        return [json.loads(line)["id"] for line in lines if line.strip()]

    pub = Publisher(relay.port)
    try:
        log = home / "agent.err"
        wait_for(lambda: b"subscribed" in log.read_bytes(), timeout=30, what="subscribed")
        assert (status()["state"], status()["store"]) == ("connected", "ok")
        # write until ENOSPC: the file system is full
        with (inside / "filler").open("wb") as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        big = pub.publish("st2", "x" * 600_000)  # needs new WAL pages: cannot commit
        wait_for(lambda: b"disk is full" in log.read_bytes(), timeout=30, what="a failed commit")
        st = status()
        assert (st["state"], st["store"], st["messages"]) == ("connected", "disk full", 0)
        (inside / "filler").unlink()
        wait_for(lambda: shown() == [big], timeout=30, what=log.read_text(errors="replace"))
        wait_for(lambda: status()["store"] == "ok", timeout=30, what="store: ok again")
        assert status()["messages"] == 1
    finally:
        pub.close()
        agent.terminate()
        agent.wait(timeout=15)
        err.close()
        out_file.close()
        relay.stop()
