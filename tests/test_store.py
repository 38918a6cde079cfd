"""The store, in-process: dedupe, atomic batches, receipts, states, retention, FTS, outbox."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import store as store_mod
from agent.envelope import Message, from_fields
from agent.errors import StoreBusy, StoreError
from agent.store import MIGRATIONS, Store
from agent.store import base as store_base
from agent.store import schema as store_schema
from agent.timeparse import Since


def msg(mid: str, text: str = "hello", *, topic: str = "t", t: int = 1000, **kw: object) -> Message:
    return from_fields({"id": mid, "message": text, "time": t, **kw}, topic=topic)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "db" / "agent.db") as s:
        yield s


def ids(rows: list[store_mod.Stored]) -> list[str]:
    return [r.message.id for r in rows]


# --- dedupe and batches --------------------------------------------------------------------


def test_batch_reports_new_messages_in_order_with_seqs(store: Store) -> None:
    new = store.insert_batch([msg("a"), msg("b"), msg("c")], source="mqtt")
    assert ids(new) == ["a", "b", "c"]
    assert [r.seq for r in new] == [1, 2, 3]
    assert [r.seq for r in store.query()] == [1, 2, 3]
    assert store.get("b") == new[1]


def test_redelivered_id_is_a_no_op(store: Store) -> None:
    store.insert_batch([msg("a", "first"), msg("b")])
    again = store.insert_batch([msg("a", "second"), msg("c")])
    assert ids(again) == ["c"]
    assert again[0].seq == 3
    assert store.count() == 3
    got = store.get("a")
    assert got is not None and got.message.message == "first"
    assert store.insert_batch([msg("a"), msg("b")]) == []


def test_duplicates_inside_one_batch_count_once(store: Store) -> None:
    new = store.insert_batch([msg("a", "1"), msg("b"), msg("a", "2"), msg("b")])
    assert ids(new) == ["a", "b"]
    assert [r.seq for r in new] == [1, 2]
    got = store.get("a")
    assert got is not None and got.message.message == "1"


def test_large_batch_crosses_the_variable_limit(store: Store) -> None:
    batch = [msg(f"m{i}") for i in range(1200)]
    assert len(store.insert_batch(batch)) == 1200
    assert store.insert_batch(batch[::-1]) == []
    assert store.count() == 1200


def test_message_round_trips_through_the_store(store: Store) -> None:
    m = from_fields(
        {
            "id": "x1",
            "time": 5,
            "expires": 99,
            "title": "T",
            "message": "body",
            "priority": "high",
            "tags": "a,b",
            "click": "https://example.org",
            "actions": [{"action": "view", "label": "Open", "url": "https://x"}],
            "attachment": {"name": "f.txt"},
            "content_type": "text/markdown",
            "color": "red",
        },
        topic="home/door",
    )
    store.insert_batch([m], source="ws")
    got = store.get("x1")
    assert got is not None
    assert (got.message, got.source, got.state) == (m, "ws", "received")


# --- cursor and receipts in the same transaction ---------------------------------------------


def test_cursor_saved_with_the_batch(store: Store) -> None:
    store.insert_batch([msg("a"), msg("b")], cursor=("srv", "alerts"))
    assert store.get_cursor("srv", "alerts") == "b"
    # a redelivered batch still moves the cursor to its last id
    store.insert_batch([msg("a"), msg("b")], cursor=("srv", "alerts"))
    store.insert_batch([msg("c")], cursor=("srv", "alerts"))
    assert store.get_cursor("srv", "alerts") == "c"
    assert store.get_cursor("srv", "other") is None


def test_failed_batch_leaves_neither_messages_nor_cursor_nor_receipts(store: Store) -> None:
    store.insert_batch([msg("a")], cursor=("srv", "s"), receipt_destination="r/dev")
    store.conn.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON messages WHEN new.id = 'bad' "
        "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
    )
    with pytest.raises(StoreError, match="injected failure"):
        store.insert_batch(
            [msg("b"), msg("c"), msg("bad")], cursor=("srv", "s"), receipt_destination="r/dev"
        )
    assert ids(store.query()) == ["a"]
    assert store.get_cursor("srv", "s") == "a"
    assert store.outbox_len() == 1
    assert not store.conn.in_transaction
    store.conn.execute("DROP TRIGGER boom")
    assert ids(store.insert_batch([msg("b")])) == ["b"]


def test_delivered_receipts_queued_only_for_new_messages(store: Store) -> None:
    store.insert_batch([msg("a")], receipt_destination="edgepush/receipts/dev1", device="dev1")
    store.insert_batch(
        [msg("a"), msg("b")], receipt_destination="edgepush/receipts/dev1", device="dev1"
    )
    items = store.outbox_peek()
    assert [i.kind for i in items] == ["receipt", "receipt"]
    assert {i.destination for i in items} == {"edgepush/receipts/dev1"}
    assert [i.payload.split('"id":"')[1].split('"')[0] for i in items] == ["a", "b"]
    assert '"state":"delivered"' in items[0].payload and '"device":"dev1"' in items[0].payload


def test_busy_database_raises_store_busy_and_commits_nothing(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with Store(path) as s, Store(path, busy_timeout=0.05) as other:
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreBusy, match="locked"):
                other.insert_batch([msg("a")], cursor=("s", "x"))
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        assert s.count() == 0 and s.get_cursor("s", "x") is None
        assert len(other.insert_batch([msg("a")])) == 1


# --- states and receipts ---------------------------------------------------------------------


def test_state_only_moves_forward(store: Store) -> None:
    store.insert_batch([msg("a"), msg("b")])
    n = store.record_states([("a", "clicked", 10.0), ("a", "displayed", 11.0), ("zz", "read", 1)])
    assert n == 2
    got = store.get("a")
    assert got is not None and got.state == "clicked"
    store.record_states([("a", "read", 12.0)])
    store.record_states([("a", "dismissed", 13.0)])
    got = store.get("a")
    assert got is not None and got.state == "read"
    assert [s for s, _, _ in store.receipts_for("a")] == [
        "clicked",
        "displayed",
        "read",
        "dismissed",
    ]
    with pytest.raises(ValueError, match="unknown state 'seen'"):
        store.record_states([("b", "seen", 1.0)])


def test_record_states_queues_receipts_for_known_ids_only(store: Store) -> None:
    store.insert_batch([msg("a")])
    store.record_states(
        [("a", "displayed", 5.0), ("ghost", "displayed", 5.0)], receipt_destination="r"
    )
    assert store.outbox_len() == 1
    assert '"id":"a"' in store.outbox_peek()[0].payload


# --- notifier hand-off -------------------------------------------------------------------------


def test_notified_seq_hand_off_only_moves_forward(store: Store) -> None:
    store.insert_batch([msg(f"m{i}") for i in range(12)])
    assert store.notified_seq() == 0
    assert len(store.pending_notifications()) == 12
    store.mark_notified(10)
    store.mark_notified(3)  # a late, smaller mark never un-notifies (numeric, not text order)
    assert store.notified_seq() == 10
    assert ids(store.pending_notifications()) == ["m10", "m11"]


# --- retention ---------------------------------------------------------------------------------


def backdate(store: Store, mid: str, received: float) -> None:
    """Make a message look stored at ``received`` (tests cannot wait a year)."""
    store.conn.execute("UPDATE messages SET received = ? WHERE id = ?", (received, mid))


def test_prune_by_age_keeps_unnotified(store: Store) -> None:
    store.insert_batch([msg("old1", t=100), msg("old2", t=200), msg("new", t=10_000)])
    store.insert_batch([msg("old-unshown", t=100)])
    for mid in ("old1", "old2", "new", "old-unshown"):
        backdate(store, mid, 150)
    store.mark_notified(3)
    store.record_states([("old1", "displayed", 1.0), ("new", "displayed", 1.0)])
    assert store.prune(max_age=1000, max_messages=100, now=10_500) == 2
    assert ids(store.query()) == ["new", "old-unshown"]
    assert store.receipts_for("old1") == []
    assert len(store.receipts_for("new")) == 1


def test_prune_by_age_counts_from_when_a_message_was_stored(store: Store) -> None:
    # A publisher without a clock stamps 1970; stored today, it stays until max_age passes.
    store.insert_batch([msg("no-rtc", t=0), msg("old", t=0)])
    backdate(store, "old", 1000)
    store.mark_notified(2)
    now = time.time()
    assert store.prune(max_age=86400, max_messages=100, now=now) == 1
    assert ids(store.query()) == ["no-rtc"]
    assert store.prune(max_age=86400, max_messages=100, now=now + 2 * 86400) == 1


def test_prune_by_count_keeps_newest_and_unnotified(store: Store) -> None:
    store.insert_batch([msg(f"m{i}", t=10_000) for i in range(10)])
    store.mark_notified(8)
    assert store.prune(max_age=10**9, max_messages=3, now=10_000) == 7
    assert ids(store.query()) == ["m7", "m8", "m9"]
    store.mark_notified(10)
    assert store.prune(max_age=10**9, max_messages=1, now=10_000) == 2
    assert ids(store.query()) == ["m9"]
    assert store.prune(max_age=10**9, max_messages=1, now=10_000) == 0


def test_pruned_messages_leave_the_search_index(store: Store) -> None:
    store.insert_batch([msg("a", "zebra", t=1), msg("b", "zebra", t=10_000)])
    backdate(store, "a", 1)
    backdate(store, "b", 1)
    store.mark_notified(2)
    store.prune(max_age=100, max_messages=10, now=10_000)
    assert ids(store.query(search="zebra")) == ["b"]


# --- queries -------------------------------------------------------------------------------------


def test_query_filters(store: Store) -> None:
    store.insert_batch(
        [
            msg("a", topic="home", t=100),
            msg("b", topic="home/door", t=200, priority=5),
            msg("c", topic="homework", t=300),
            msg("d", topic="office/x", t=400),
        ]
    )
    assert ids(store.query(topics=["home/#"])) == ["a", "b"]
    assert ids(store.query(topics=["home*"])) == ["a", "b", "c"]
    assert ids(store.query(topics=["home", "office/x"])) == ["a", "d"]
    assert ids(store.query(topics=["#"])) == ["a", "b", "c", "d"]
    assert ids(store.query(topics=[])) == []
    assert ids(store.query(since=Since("id", id="b"))) == ["c", "d"]
    assert ids(store.query(since=Since("id", id="unknown"))) == ["a", "b", "c", "d"]
    assert ids(store.query(since=Since("time", time=300))) == ["c", "d"]
    assert ids(store.query(since=Since("latest"))) == ["d"]
    assert ids(store.query(min_priority=4)) == ["b"]
    assert ids(store.query(limit=2)) == ["c", "d"]
    assert ids(store.query(limit=2, newest=False)) == ["a", "b"]
    assert ids(store.query(after_seq=3)) == ["d"]


@pytest.mark.parametrize(
    "text",
    ["NEAR(", "*", "-", '"', 'a"b', "AND", "OR x", "NOT", "col:x", "^", "(", ")", "'; DROP", "  "],
)
def test_hostile_search_text_is_never_a_syntax_error(store: Store, text: str) -> None:
    store.insert_batch([msg("a", "hello NEAR world"), msg("b", "other")])
    rows = store.query(search=text)
    assert ids(rows) == (["a"] if text == "NEAR(" else [])
    assert store.count() == 2


def test_search_matches_title_message_and_tags(store: Store) -> None:
    store.insert_batch(
        [
            msg("a", "the front door opened"),
            msg("b", "x", title="Door bell"),
            msg("c", "y", tags=["door"]),
            msg("d", "nothing here"),
        ]
    )
    assert ids(store.query(search="door")) == ["a", "b", "c"]
    assert ids(store.query(search="front door")) == ["a"]
    assert ids(store.query(search="-door")) == ["a", "b", "c"]


# --- outbox and meta -----------------------------------------------------------------------------


def test_outbox_is_fifo_until_done(store: Store) -> None:
    seqs = [store.outbox_add("publish", f"topic{i}", f"p{i}") for i in range(5)]
    assert [i.payload for i in store.outbox_peek(limit=3)] == ["p0", "p1", "p2"]
    store.outbox_failed(seqs[:2])
    store.outbox_done([seqs[1]])
    items = store.outbox_peek()
    assert [(i.payload, i.attempts) for i in items] == [
        ("p0", 1),
        ("p2", 0),
        ("p3", 0),
        ("p4", 0),
    ]
    store.outbox_add("receipt", "r", "x")
    assert [i.payload for i in store.outbox_peek(kind="receipt")] == ["x"]
    assert store.outbox_len() == 5


def test_meta(store: Store) -> None:
    assert store.get_meta("k") is None
    store.set_meta("k", "v")
    assert store.get_meta("k") == "v"
    assert store.meta_default("k", lambda: "other") == "v"
    assert store.meta_default("dev", lambda: "d1") == "d1"
    assert store.meta_default("dev", lambda: "d2") == "d1"
    store.set_meta("k", None)
    assert store.get_meta("k") is None


# --- opening, migrations, bad files ----------------------------------------------------------


def test_migrations_recorded_and_idempotent_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with Store(path) as s:
        s.insert_batch([msg("a")])
        assert s._applied() == [name for name, _ in MIGRATIONS]
        assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    for _ in range(2):
        with Store(path) as s:
            assert s.count() == 1
            rows = s.conn.execute("SELECT name FROM _migrations").fetchall()
            assert sorted(r[0] for r in rows) == [name for name, _ in MIGRATIONS]


def test_new_migration_applies_once_on_an_old_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.db"
    with Store(path) as s:
        s.insert_batch([msg("a")])
    calls: list[str] = []

    def m999(db: object) -> None:
        calls.append("ran")
        db.execute("CREATE TABLE extra (x INTEGER)")  # type: ignore[attr-defined]

    monkeypatch.setattr(store_base, "MIGRATIONS", (*MIGRATIONS, ("999_extra", m999)))
    for _ in range(2):
        with Store(path) as s:
            assert s.count() == 1
            assert s._applied()[-1] == "999_extra"
    assert calls == ["ran"]


def test_corrupt_file_is_a_store_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    path.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(StoreError, match=r"a\.db: the database is corrupt") as info:
        Store(path).open()
    assert not isinstance(info.value, StoreBusy)


def test_malformed_is_corruption_not_busy() -> None:
    assert not store_schema._passing("database disk image is malformed")
    assert store_schema._passing("database is locked")
    assert store_schema._passing("database or disk is full")


def test_closed_store_is_a_clear_bug(tmp_path: Path) -> None:
    s = Store(tmp_path / "a.db").open()
    s.close()
    with pytest.raises(Exception, match="closed"):
        s.count()


def test_hostile_topics_are_plain_values_in_filters(store: Store) -> None:
    hostile = ["x'); DELETE FROM messages;--", "a/%/b", "a/_/b", "../../etc/passwd", "a/b"]
    store.insert_batch([msg(f"h{i}", topic=t) for i, t in enumerate(hostile)])
    assert ids(store.query(topics=["a/%/#"])) == ["h1"]
    assert ids(store.query(topics=["a/_/b"])) == ["h2"]
    assert ids(store.query(topics=[hostile[0]])) == ["h0"]
    assert ids(store.query(topics=["../#"])) == ["h3"]
    assert store.count() == 5


def test_failing_migration_rolls_back_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.db"
    with Store(path) as s:
        s.insert_batch([msg("a")])

    def broken(db: object) -> None:
        db.execute("CREATE TABLE half (x INTEGER)")  # type: ignore[attr-defined]
        db.execute("THIS IS NOT SQL")  # type: ignore[attr-defined]

    monkeypatch.setattr(store_base, "MIGRATIONS", (*MIGRATIONS, ("998_broken", broken)))
    with pytest.raises(StoreError, match=r"a\.db: .*syntax error"):
        Store(path).open()
    monkeypatch.setattr(store_base, "MIGRATIONS", MIGRATIONS)
    with Store(path) as s:
        assert "998_broken" not in s._applied()
        assert s.conn.execute("SELECT name FROM sqlite_master WHERE name = 'half'").fetchall() == []
        assert s.count() == 1


def test_text_with_nul_characters_is_stored_whole(tmp_path: Path) -> None:
    # The one-statement batch insert goes through json_extract, which cuts text at a NUL;
    # a batch carrying one must still store every character.
    with_nul = from_fields({"id": "nul1", "title": "a\x00b", "message": "before\x00after"})
    plain = from_fields({"id": "nul2", "message": "plain"})
    with Store(tmp_path / "s.db") as store:
        assert [s.message.id for s in store.insert_batch([with_nul, plain])] == ["nul1", "nul2"]
        got = store.get("nul1")
        assert got is not None and got.message == with_nul
        assert got.message.message == "before\x00after" and got.message.title == "a\x00b"
        assert [r.message.id for r in store.query(search="after")] == ["nul1"]
