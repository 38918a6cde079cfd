"""The pure analytics core (agent.analytics) and the store's aggregates behind it
(agent.store.analytics, migration 012): medians, click-through rates, suggestions, plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import analytics
from agent.analytics import Engagement, funnel, suggest, window_start
from agent.envelope import Message, from_fields
from agent.store import MIGRATIONS, Store
from agent.store import base as store_base

T0 = 1_800_000_000  # a day boundary is at T0 - T0 % 86400


def test_window_start() -> None:
    assert window_start("7d", now=T0) == T0 - 7 * 86400
    assert window_start("12h", now=T0) == T0 - 12 * 3600
    assert window_start("1700000000", now=T0) == 1_700_000_000
    assert window_start("all", now=T0) == 0
    assert window_start("99999d", now=T0) == 0  # never before the epoch
    for bad in ("", "yesterday", "-1d", "7 days"):
        with pytest.raises(ValueError, match="not a duration"):
            window_start(bad, now=T0)


def test_funnel_row_rates() -> None:
    row = funnel(4, {"delivered": 8, "displayed": 6, "clicked": 3}, 12.3456)
    assert row == {"published": 4, "delivered": 8, "displayed": 6, "clicked": 3, "dismissed": 0,
                   "acknowledged": 0, "ctr": 0.5, "median_click_seconds": 12.346}  # fmt: skip
    assert funnel(1, {}, None)["ctr"] is None  # nothing displayed: no rate, not a 0 % one


def _store(tmp_path: Path) -> Store:
    return Store(tmp_path / "s.db").open()


def _msg(i: int, topic: str, t: int, **extra: object) -> Message:
    return from_fields({"id": f"msg{i:09d}", "message": "m", "time": t, **extra}, topic=topic)


def test_median_and_days_from_the_store(tmp_path: Path) -> None:
    day = T0 - T0 % 86400
    with _store(tmp_path) as s:
        msgs = [_msg(i, "a", day + 10 * i) for i in range(4)] + [_msg(9, "a", day + 86400)]
        s.insert_batch(msgs)
        clicks = [
            (m.id, "clicked", m.time + d) for m, d in zip(msgs, (4, 1, 3, 10, 7), strict=True)
        ]
        s.record_states(clicks, device="laptop", owner="alice")
        s.record_states([(msgs[0].id, "displayed", day + 1)], device="laptop", owner="alice")
        s.record_states([(msgs[0].id, "displayed", day + 2)], device="phone", owner="alice")
        rows = s.funnel_rows(0)
        report = analytics.funnel_report(rows, readable=lambda t: True, since=0, until=T0)
    a = report["topics"]["a"]
    # day 1: clicks after 4, 1, 3, 10 s -> median of 3 and 4; whole window adds 7 -> 4
    assert [d["median_click_seconds"] for d in a["days"]] == [3.5, 7.0]
    assert a["total"]["median_click_seconds"] == 4.0
    assert a["total"]["displayed"] == 2 and a["total"]["clicked"] == 5
    assert a["total"]["ctr"] == 2.5  # clicks reported without a displayed receipt: kept as said
    assert [d["day"] for d in a["days"]] == [analytics.day_label(day // 86400),
                                             analytics.day_label(day // 86400 + 1)]  # fmt: skip


def test_clear_events_are_not_publications_and_unreadable_topics_are_left_out(
    tmp_path: Path,
) -> None:
    with _store(tmp_path) as s:
        s.insert_batch([_msg(1, "a", T0), _msg(2, "a", T0, event="message_clear",
                                                sequence_id="x"), _msg(3, "b", T0)])  # fmt: skip
        rows = s.funnel_rows(0)
        only_a = s.funnel_rows(0, topics=["a"])
    report = analytics.funnel_report(rows, readable=lambda t: t == "a", since=0, until=T0)
    assert list(report["topics"]) == ["a"]
    assert report["topics"]["a"]["total"]["published"] == 1
    assert {t for t, _, _ in only_a.published} == {"a"}


def test_the_funnel_queries_use_indexes(tmp_path: Path) -> None:
    with _store(tmp_path) as s:
        plan = " ".join(
            str(r[3]) for r in s.conn.execute(
                "EXPLAIN QUERY PLAN SELECT m.topic, r.state, count(*) FROM messages m JOIN "
                "receipts r ON r.message_id = m.id WHERE m.time >= 0 AND m.topic IN ('a') "
                "GROUP BY 1, 2")
        )  # fmt: skip
    assert "messages_topic_time" in plan and "sqlite_autoindex_receipts_1" in plan, plan


def test_migration_012_on_an_older_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = tuple(m for m in MIGRATIONS if m[0] < "012")
    monkeypatch.setattr(store_base, "MIGRATIONS", before)
    with Store(tmp_path / "old.db") as old:
        old.insert_batch([_msg(1, "a", T0)])
    monkeypatch.setattr(store_base, "MIGRATIONS", MIGRATIONS)
    with Store(tmp_path / "old.db") as s:
        s.record_held([("msg000000001", "muted")], now=5.0)
        s.record_held([("msg000000001", "quiet")], now=6.0)  # the first verdict stays
        assert s.engagement_rows(0) == [("a", 3, None, "received", False, False, "muted", 1)]
        assert s.prune(max_age=0, max_messages=0, now=T0 + 10**9) == 0  # not yet handed over
        s.mark_notified(1)
        assert s.prune(max_age=0, max_messages=0, now=T0 + 10**9) == 1
        assert s.conn.execute("SELECT count(*) FROM held").fetchone()[0] == 0


def _eng(shown: int, dismissed: int, priority: int = 3, clicked: int = 0) -> Engagement:
    e = Engagement()
    e.add(priority, "dismissed", True, False, None, dismissed)
    e.add(priority, "clicked", True, True, None, clicked)
    e.add(priority, "displayed", True, False, None, shown - dismissed - clicked)
    return e


def test_suggestions_threshold_sample_prefix_and_mute() -> None:
    topics = {"ci/a": _eng(30, 29), "ci/b": _eng(20, 19), "alerts": _eng(10, 10, priority=5),
              "news": _eng(100, 80), "solo/x": _eng(25, 25, priority=2)}  # fmt: skip
    got = suggest(topics, threshold=0.9, min_sample=20)
    assert [(s["pattern"], s["rule"]) for s in got] == [
        ("ci/*", {"topic": "ci/*", "min_priority": 4}),  # 48 of 50: both ci topics together
        ("solo/x", {"topic": "solo/x", "min_priority": 3}),  # alone under its prefix
    ]  # alerts: below the sample size; news: 80 % is below the threshold
    assert got[0]["text"] == "ci/*: 96 % dismissed unread (48 of 50 shown) — `min_priority = 4`?"
    got = suggest(topics, threshold=0.9, min_sample=10)
    assert ("alerts", {"topic": "alerts", "mute": True}) in [(s["pattern"], s["rule"]) for s in got]


def test_by_device_groups_states_and_keeps_the_furthest() -> None:
    rows = [("bob", "p1", "delivered", 1.0), ("bob", "p1", "displayed", 2.0),
            ("bob", "l1", "delivered", 1.5), ("bob", "p1", "clicked", 3.0),
            ("bob", "p1", "displayed", 4.0), ("eve", "p1", "dismissed", 5.0)]  # fmt: skip
    names = {("bob", "p1"): "phone", ("bob", "l1"): "laptop"}
    assert analytics.by_device(rows, names) == [
        {"owner": "bob", "device": "p1", "device_name": "phone", "state": "clicked",
         "states": {"delivered": 1.0, "displayed": 2.0, "clicked": 3.0}},
        {"owner": "bob", "device": "l1", "device_name": "laptop", "state": "delivered",
         "states": {"delivered": 1.5}},
        {"owner": "eve", "device": "p1", "device_name": "", "state": "dismissed",
         "states": {"dismissed": 5.0}},
    ]  # fmt: skip


def test_recent_devices_carry_their_names(tmp_path: Path) -> None:
    with _store(tmp_path) as s:
        s.insert_batch([_msg(1, "a", T0)])
        s.record_states([("msg000000001", "displayed", 7.0)], device="c1", owner="bob",
                        device_name="laptop")  # fmt: skip
        s.record_states([("msg000000001", "displayed", 8.0)], device="c2", owner="bob")
        assert s.recent_devices(0) == [("bob", "c2", "", 8.0, 1), ("bob", "c1", "laptop", 7.0, 1)]
