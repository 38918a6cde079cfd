"""``pushagent status``: answers from the daemon's status file, says when none is running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from agent.envelope import from_fields
from agent.store import Store
from tests.helpers import pushagent


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
