"""The state order (agent.states, pure) and the store's synced-state batches
(agent.store.syncstate): forward only, duplicates and late states are no-ops, ordering by
rank and never by the devices' clocks, states waiting for their message, one transaction per
batch."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from agent.envelope import from_fields
from agent.errors import MessageError
from agent.states import (
    RANK,
    STATE_EVENT,
    SYNCED,
    StateEvent,
    advances,
    parse_event,
    rank,
    rank_sql,
    winners,
)
from agent.store import Store


def test_the_order_is_the_issues_with_read_and_acknowledged_on_top() -> None:
    order = ["delivered", "displayed", "dismissed", "clicked", "read", "acknowledged"]
    assert [rank(s) for s in order] == sorted(rank(s) for s in order)
    assert len({rank(s) for s in order}) == len(order)  # a total order: devices converge
    assert rank("received") == rank("delivered") == 0
    assert rank("deleted") > rank("acknowledged") and rank("undecryptable") > rank("deleted")
    assert {"dismissed", "clicked", "read", "acknowledged"} == SYNCED
    with pytest.raises(ValueError, match="unknown state"):
        rank("seen")


@pytest.mark.parametrize(
    ("old", "new", "moves"),
    [("received", "displayed", True), ("displayed", "displayed", False),
     ("clicked", "displayed", False), ("clicked", "dismissed", False),
     ("dismissed", "clicked", True), ("read", "clicked", False),
     ("read", "acknowledged", True), ("undecryptable", "read", False),
     ("deleted", "acknowledged", False)],
)  # fmt: skip
def test_only_forward_moves_change_anything(old: str, new: str, moves: bool) -> None:
    assert advances(old, new) is moves


def test_the_sql_rank_is_the_same_table() -> None:
    conn = sqlite3.connect(":memory:")
    for state, r in {**RANK, "deleted": 6, "undecryptable": 9, "whatever": 0}.items():
        got = conn.execute(f"SELECT {rank_sql('s')} FROM (SELECT ? AS s)", (state,)).fetchone()
        assert got == (r,), state
    skipped = conn.execute(f"SELECT {rank_sql('s', skip=['undecryptable'])} FROM (SELECT "
                           "'undecryptable' AS s)").fetchone()  # fmt: skip
    assert skipped == (0,)


def test_winners_take_the_rank_not_the_clock() -> None:
    # a device whose clock runs an hour ahead reports the lower state "later": rank decides
    skewed = [
        StateEvent("m1", "clicked", "a", 1000.0),
        StateEvent("m1", "dismissed", "b", 4600.0),
        StateEvent("m2", "dismissed", "b", 10.0),
        StateEvent("m2", "dismissed", "a", 5.0),
    ]
    best = winners(skewed)
    assert best["m1"].state == "clicked" and best["m1"].device == "a"
    assert best["m2"].device == "b"  # equal rank: the first seen stays (a duplicate is a no-op)
    assert winners(reversed(skewed))["m1"].state == "clicked"


def test_state_events_parse_and_encode() -> None:
    ev = StateEvent("abcdefghijkl", "read", "pushagent-1", 17.9, "home", "laptop")
    wire = ev.wire()
    assert wire == {"event": STATE_EVENT, "id": "abcdefghijkl", "state": "read",
                    "device": "pushagent-1", "time": 17, "topic": "home",
                    "device_name": "laptop"}  # fmt: skip
    back = parse_event(json.loads(json.dumps(wire)))
    assert back == StateEvent("abcdefghijkl", "read", "pushagent-1", 17.0, "home", "laptop")
    assert parse_event({"id": "abcdefghijkl", "state": "clicked"}, topic="t").topic == "t"
    bad = [[], {"id": "a b", "state": "read"}, {"id": "abcdefghijkl", "state": "gone"},
           {"id": "abcdefghijkl", "state": "read", "device": "x" * 200},
           {"id": "abcdefghijkl", "state": "read", "time": "soon"},
           {"id": "abcdefghijkl", "state": "read", "time": True},
           {"id": "abcdefghijkl", "state": "read", "device": "a\nb"}]  # fmt: skip
    for obj in bad:
        with pytest.raises(MessageError):
            parse_event(obj)


def _msg(mid: str, topic: str = "home") -> object:
    return from_fields({"id": mid, "message": "m"}, topic=topic)


def test_the_agent_applies_remote_states_forward_only_and_never_queues_them(
    tmp_path: Path,
) -> None:
    with Store(tmp_path / "a.db") as s:
        s.insert_batch([_msg("m1"), _msg("m2")], receipt_destination="r/dev")  # type: ignore[list-item]
        before = s.outbox_len()
        moved = s.apply_remote_states([StateEvent("m1", "clicked", "phone", 5.0, "home")])
        assert [(x.message.id, x.state) for x in moved] == [("m1", "clicked")]
        # duplicate, late and lower states: no-ops, nothing returned to close again
        again = [StateEvent("m1", "clicked", "phone", 5.0, "home"),
                 StateEvent("m1", "dismissed", "tablet", 9.0, "home"),
                 StateEvent("m1", "displayed", "tablet", 9.0, "home")]  # fmt: skip
        assert s.apply_remote_states(again) == []
        # its own device's echo and a state naming another topic are ignored
        assert s.apply_remote_states([StateEvent("m2", "read", "me", 1.0, "home")],
                                     own_device="me") == []  # fmt: skip
        assert s.apply_remote_states([StateEvent("m2", "read", "x", 1.0, "other")]) == []
        assert s.get("m2").state == "received"  # type: ignore[union-attr]
        assert s.outbox_len() == before  # no receipt for what another device did
        assert s.state_of("m1") == StateEvent("m1", "clicked", "phone", 5.0, "home")


def test_a_state_that_overtakes_its_message_is_applied_when_it_arrives(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db") as s:
        assert (
            s.apply_remote_states(
                [
                    StateEvent("late", "read", "phone", 1.0, "home"),
                    StateEvent("elsewhere", "read", "p", 1.0, "away"),
                ]
            )
            == []
        )
        [got, other] = s.insert_batch([_msg("late"), _msg("elsewhere")])  # type: ignore[list-item]
        assert (got.message.id, got.state) == ("late", "read")
        assert other.state == "received"  # the pending state named another topic
        assert s.get("late").state == "read"  # type: ignore[union-attr]
        assert s.conn.execute("SELECT count(*) FROM pending_states").fetchone() == (0,)


def test_the_relay_keeps_each_owners_highest_state_and_replays_by_its_clock(
    tmp_path: Path,
) -> None:
    with Store(tmp_path / "r.db") as s:
        s.insert_batch([_msg("m1"), _msg("m2", "away")])  # type: ignore[list-item]
        first = s.sync_states(
            [
                StateEvent("m1", "dismissed", "b", 99.0, "home"),
                StateEvent("m1", "clicked", "a", 1.0, "home"),
                StateEvent("m1", "displayed", "a", 1.0, "home"),
            ],
            owner="alice",
        )
        assert [(e.id, e.state, e.device) for e in first] == [("m1", "clicked", "a")]
        assert s.sync_states([StateEvent("m1", "dismissed", "c", 2.0, "home")], owner="alice") == []
        assert (
            len(s.sync_states([StateEvent("m1", "dismissed", "c", 2.0, "home")], owner="bob")) == 1
        )
        s.sync_states([StateEvent("m2", "read", "a", 3.0, "away")], owner="alice")
        assert [e.id for e in s.states_since("alice", ["home"], 0)] == ["m1"]
        assert [e.id for e in s.states_since("alice", ["home", "away"], 0)] == ["m1", "m2"]
        assert s.states_since("alice", ["home"], 2**40) == []
        assert s.states_since("eve", ["home", "away"], 0) == []


def _commits(store: Store) -> list[str]:
    """Every COMMIT the store's connection runs from now on (sqlite3's trace callback)."""
    seen: list[str] = []
    store.conn.set_trace_callback(lambda sql: seen.append(sql) if sql == "COMMIT" else None)
    return seen


def test_a_burst_of_ten_thousand_is_one_transaction_per_batch(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db") as s:
        ids = [f"burst{i:07d}" for i in range(10_000)]
        s.insert_batch([_msg(i) for i in ids])  # type: ignore[misc]
        commits = _commits(s)
        events = [StateEvent(i, "read", "phone", 1.0, "home") for i in ids]
        assert len(s.apply_remote_states(events)) == 10_000
        assert len(commits) == 1
        assert s.count_by_state().get("read") == 10_000


def test_the_relays_post_of_receipts_and_states_is_one_transaction(tmp_path: Path) -> None:
    with Store(tmp_path / "r.db") as s:
        ids = [f"post{i:08d}" for i in range(1000)]
        s.insert_batch([_msg(i) for i in ids])  # type: ignore[misc]
        commits = _commits(s)
        groups = [("laptop", "Laptop", [(i, "clicked", 5.0) for i in ids[:600]]),
                  ("phone", "Phone", [(i, "dismissed", 6.0) for i in ids[400:]])]  # fmt: skip
        synced = [StateEvent(i, st, d, t, "home", n) for d, n, ev in groups for i, st, t in ev]
        accepted, moved = s.record_receipts(groups, synced, owner="alice", max_devices=16)
        assert accepted == 1200 and len(moved) == 1000 and len(commits) == 1
        # the overlap converged on the higher rank, whatever order the devices came in
        assert {e.state for e in moved if e.id in ids[400:600]} == {"clicked"}
        assert s.device_names(ids[500]) == {("alice", "laptop"): "Laptop",
                                            ("alice", "phone"): "Phone"}  # fmt: skip
        # a failure inside rolls the whole POST back: nothing half-recorded
        with pytest.raises(ValueError):
            s.record_receipts([("x", "", [(ids[0], "read", 1.0)]), ("y", "", [(ids[1], "bogus",
                              1.0)])], [], owner="bob")  # fmt: skip
        assert s.get(ids[0]).state == "clicked"  # type: ignore[union-attr]
