"""``pushagent pause/resume/read``: real CLI processes against a real store."""

from __future__ import annotations

import json
import time
from pathlib import Path

from agent import dnd
from agent.store import Store
from tests.helpers import pushagent
from tests.notifyhelp import msg


def _store(home: Path) -> Store:
    return Store(home / "data" / "pushagent.db").open()


def test_pause_and_resume(home: Path) -> None:
    r = pushagent("pause", "1h", home=home)
    assert r.returncode == 0, r.stderr
    assert b"paused until" in r.stdout
    with _store(home) as s:
        until = dnd.paused_until(s, time.time())
        assert until is not None and 3500 < until - time.time() <= 3600
    assert pushagent("resume", home=home).returncode == 0
    with _store(home) as s:
        assert dnd.paused_until(s, time.time()) is None
    r = pushagent("pause", home=home)
    assert r.returncode == 0 and b"until 'pushagent resume'" in r.stdout
    with _store(home) as s:
        assert dnd.paused_until(s, time.time()) is not None


def test_pause_bad_duration(home: Path) -> None:
    r = pushagent("pause", "soon", home=home)
    assert r.returncode == 2
    assert b"not a duration" in r.stderr


def test_read_one_and_all_queue_receipts(home: Path) -> None:
    with _store(home) as s:
        a, b, c = s.insert_batch([msg(title="a"), msg(title="b"), msg(title="c")])
        s.set_meta("client_id", "pushagent-test")
    r = pushagent("read", a.message.id, home=home)
    assert r.returncode == 0, r.stderr
    with _store(home) as s:
        assert s.get(a.message.id).state == "read"  # type: ignore[union-attr]
        assert s.get(b.message.id).state == "received"  # type: ignore[union-attr]
    r = pushagent("read", "--all", home=home)
    assert r.returncode == 0 and b"marked 2 messages read" in r.stdout
    with _store(home) as s:
        assert {x.state for x in s.query()} == {"read"}
        receipts = s.outbox_peek(10, kind="receipt")
    assert {o.destination for o in receipts} == {"edgepush/receipts/pushagent-test"}
    assert sorted(json.loads(o.payload)["id"] for o in receipts) == sorted(
        m.message.id for m in (a, b, c)
    )
    assert {json.loads(o.payload)["state"] for o in receipts} == {"read"}


def test_read_usage_errors(home: Path) -> None:
    assert pushagent("read", home=home).returncode == 2
    r = pushagent("read", "bad id!", home=home)
    assert r.returncode == 2 and b"id must be" in r.stderr
    r = pushagent("read", "nosuchid", home=home)
    assert r.returncode == 1 and b"not found" in r.stdout
