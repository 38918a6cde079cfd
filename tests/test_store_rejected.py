"""The store's ``rejected`` table: written in the batch's transaction, bounded, listed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.envelope import from_fields
from agent.errors import StoreError
from agent.store import MIGRATIONS, Rejected, Store
from agent.store import schema as store_schema


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "agent.db") as s:
        yield s


def rej(i: int, now: float = 1000.0, payload: bytes = b"{bad}") -> Rejected:
    return Rejected.of("mqtt://b:1883", f"t/{i}", f"reason {i}", payload, now)


def test_migration_005_rejected_is_recorded_after_004() -> None:
    names = [name for name, _ in MIGRATIONS]
    assert names.index("005_rejected") == names.index("004_mqtt_redelivery") + 1


def test_rejected_go_in_with_the_batch_and_are_listed_newest_last(store: Store) -> None:
    m = from_fields({"id": "ok1", "message": "honest"}, topic="t")
    new = store.insert_batch([m], source="s", cursor=("s", "sub"), rejected=[rej(1), rej(2)])
    assert [s.message.id for s in new] == ["ok1"]
    rows = store.rejected_list()
    assert [(r.topic, r.reason, r.payload, r.size) for _, r in rows] == [
        ("t/1", "reason 1", b"{bad}", 5), ("t/2", "reason 2", b"{bad}", 5)
    ]  # fmt: skip
    assert rows[0][0] < rows[1][0] and store.rejected_count() == 2
    assert store.get_cursor("s", "sub") == "ok1"


def test_a_batch_of_only_rejected_payloads_commits_and_may_move_the_cursor(store: Store) -> None:
    assert store.insert_batch([], source="s", cursor=("s", "sub"), rejected=[rej(1)],
                              cursor_id="bad1") == []  # fmt: skip
    assert store.rejected_count() == 1 and store.count() == 0
    assert store.get_cursor("s", "sub") == "bad1"


def test_rejected_roll_back_with_their_batch(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object) -> None:
        raise store_schema.sqlite3.OperationalError("no such table: nope")

    m = from_fields({"id": "ok1", "message": "honest"}, topic="t")
    monkeypatch.setattr(store_schema, "_row", boom)
    with pytest.raises(StoreError):
        store.insert_batch([m], source="s", rejected=[rej(1)])
    assert store.rejected_count() == 0 and store.rejected_list() == []


def test_payload_is_kept_to_4096_bytes_with_its_whole_size(store: Store) -> None:
    store.add_rejected([rej(1, payload=b"x" * 10_000), Rejected.of("s", None, "r", "\ud800", 1)])
    (_, big), (_, text) = store.rejected_list()
    assert (len(big.payload), big.size) == (4096, 10_000)
    assert text.topic is None and text.payload == b"\\ud800"


def test_retention_keeps_the_newest_thousand_and_thirty_days(store: Store) -> None:
    store.add_rejected([rej(i) for i in range(1200)])
    rows = store.rejected_list(limit=5000)
    assert len(rows) == 1000 and rows[0][1].topic == "t/200" and rows[-1][1].topic == "t/1199"
    assert store.rejected_count() == 1200  # ever rejected: retention does not lower it
    store.add_rejected([rej(5000, now=40 * 86400.0)])
    store.prune(max_age=10**9, max_messages=10**6, now=40 * 86400.0 + 1)
    assert [r.topic for _, r in store.rejected_list()] == ["t/5000"]


def test_reject_warnings_are_rate_limited_and_the_rest_summed_up(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    from agent import transports

    clock = [1000.0]
    monkeypatch.setattr(transports.time, "monotonic", lambda: clock[0])
    log = logging.getLogger("test.rejects")
    caplog.set_level(logging.WARNING, logger="test.rejects")
    limiter = transports.RejectLog(log, burst=3, window=60.0)
    for i in range(50):
        limiter.note("mqtt://b", rej(i))
    assert len(caplog.records) == 3
    clock[0] += 61
    limiter.note("mqtt://b", rej(99))
    texts = [r.getMessage() for r in caplog.records]
    assert len(texts) == 5 and "47 more rejected payloads not logged" in texts[3]
    assert "reason 99" in texts[4] and "history --rejected" in texts[4]
