"""The store's scheduled messages (migration 007, ``agent/store/scheduled.py``): durable,
invisible until due, released into ``messages`` exactly once in one transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.envelope import Message
from agent.store import MIGRATIONS, Store
from agent.timeparse import Since


def msg(mid: str, *, topic: str = "t", due: int = 2000, **extra: object) -> Message:
    return Message(id=mid, time=due, topic=topic, message=f"text {mid}", extra=dict(extra))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "relay.db") as s:
        yield s


def test_migration_007_is_recorded(store: Store) -> None:
    assert "007_scheduled" in [name for name, _ in MIGRATIONS]
    assert "007_scheduled" in store._applied()


def test_scheduled_is_invisible_until_released(store: Store) -> None:
    assert store.schedule(msg("a1", due=2000)) is True
    assert store.schedule(msg("a1", due=2000)) is False  # the same id twice: kept once
    assert store.query(topics=["t"], since=Since("all")) == []
    assert store.get("a1") is None and store.count() == 0
    assert store.next_due() == 2000 and store.scheduled_count() == 1
    assert [m.id for m in store.scheduled_messages(["t"])] == ["a1"]
    assert store.scheduled_messages(["other"]) == []
    assert store.release_due(1999) == []  # not yet
    out = store.release_due(2000)
    assert [(s.message.id, s.message.time, s.message.message) for s in out] == [
        ("a1", 2000, "text a1")
    ]
    assert out[0].seq == store.seq_of("a1")
    assert store.next_due() is None and store.scheduled_count() == 0
    assert store.release_due(10**9) == []  # released once, never again
    assert [s.message.id for s in store.query(topics=["t"], since=Since("all"))] == ["a1"]
    assert store.schedule(msg("a1", due=3000)) is False  # already delivered: not again


def test_release_survives_reopen_and_keeps_fields(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    with Store(path) as s:
        m = Message(id="k1", time=5000, topic="t", message="m", title="T", priority=5,
                    tags=("warning",), click="https://x", extra={"icon": "i.png"})  # fmt: skip
        s.schedule(m)
    with Store(path) as s:  # a restart (the data is on disk before schedule returned)
        assert s.next_due() == 5000
        out = s.release_due(6000)
        assert [x.message for x in out] == [m]
    with Store(path) as s:
        assert s.scheduled_count() == 0 and s.get("k1") is not None


def test_thousand_same_second_in_one_transaction(store: Store) -> None:
    for i in range(1000):
        store.schedule(msg(f"m{i:04d}", due=2000))
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    out = store.release_due(2000, forward=lambda m: "up")
    store.conn.set_trace_callback(None)
    assert len(out) == 1000
    assert [s.seq for s in out] == list(range(out[0].seq, out[0].seq + 1000))
    assert sorted(s.message.id for s in out) == [f"m{i:04d}" for i in range(1000)]
    assert sum(1 for q in statements if q.startswith("BEGIN")) == 1
    assert sum(1 for q in statements if q == "COMMIT") == 1
    assert store.count() == 1000 and store.scheduled_count() == 0
    assert len(store.outbox_peek(2000, "message")) == 1000  # forwards in the same commit


def test_crash_inside_release_keeps_them_scheduled(store: Store) -> None:
    store.schedule(msg("c1", due=2000))

    def boom(m: Message) -> str | None:
        raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        store.release_due(2000, forward=boom)
    assert store.count() == 0 and store.scheduled_count() == 1  # all or nothing
    assert [s.message.id for s in store.release_due(2000)] == ["c1"]


def test_already_stored_id_is_not_stored_twice(store: Store) -> None:
    store.schedule(msg("d1", due=2000))
    store.insert_batch([msg("d1", due=2000)])  # e.g. the same id arrived another way
    assert store.release_due(2000) == []
    assert store.count() == 1 and store.scheduled_count() == 0


def test_same_sequence_replaces_pending(store: Store) -> None:
    store.schedule(msg("s1", due=2000, sequence_id="beat"))
    store.schedule(msg("other", topic="u", due=2000, sequence_id="beat"))  # other topic: kept
    store.schedule(msg("s2", due=3000, sequence_id="beat"))
    assert store.scheduled_count() == 2
    assert [m.id for m in store.scheduled_messages(["t"])] == ["s2"]
    # a message without sequence_id is its own sequence: its id
    store.schedule(msg("p1", due=2500))
    store.schedule(msg("p2", due=2600, sequence_id="p1"))
    assert [m.id for m in store.scheduled_messages(["t"])] == ["p2", "s2"]


def test_cancel_scheduled(store: Store) -> None:
    store.schedule(msg("x1", due=2000, sequence_id="job"))
    store.schedule(msg("x2", topic="u", due=2000, sequence_id="job"))
    store.schedule(msg("x3", due=2000))
    assert store.cancel_scheduled("t", "job") == 1
    assert store.cancel_scheduled("t", "job") == 0
    assert store.cancel_scheduled("t", "x3") == 1  # by the message id
    assert [s.message.id for s in store.release_due(2000)] == ["x2"]


def test_undecodable_row_goes_to_rejected_not_blocking(store: Store) -> None:
    store.schedule(msg("g1", due=2000))
    with sqlite3.connect(store.path) as raw:
        raw.execute("INSERT INTO scheduled VALUES ('bad', 't', 1999, 'bad', '{not json', 0)")
    assert [s.message.id for s in store.release_due(2000)] == ["g1"]
    assert store.scheduled_count() == 0 and store.rejected_count() == 1
