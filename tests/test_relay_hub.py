"""The hub's commit group against a real store: one publish that cannot be stored fails
alone; StoreBusy is everyone's (503); honest publishes of the same group are stored once."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from pathlib import Path

import pytest

from agent.envelope import Message, from_fields
from agent.errors import MessageError, StoreBusy
from agent.store import Store
from edge_relay.hub import Hub


def _msg(topic: str, text: str) -> Message:
    return from_fields({"message": text}, topic=topic)


def _forward(msg: Message) -> str | None:
    # A forward rule that fails for one topic: a failure inside insert_batch's transaction
    # that no validation can see coming (the stand-in for any store-time surprise).
    if msg.topic == "boom":
        raise RuntimeError("forward rule failed")
    return None


async def test_a_failing_member_fails_alone_and_the_rest_of_its_group_is_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(tmp_path / "relay.db").open()
    try:
        async with Hub(store, forward=_forward) as hub:
            honest = [[_msg("ok", f"m{i}")] for i in range(50)]
            jobs = [hub.publish(m) for m in honest]
            jobs.insert(25, hub.publish([_msg("boom", "bad")]))
            results = await asyncio.gather(*jobs, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        assert len(failed) == 1 and "forward rule failed" in str(failed[0])
        stored_ids = [s.message.id for r in results if isinstance(r, list) for s in r]
        assert Counter(stored_ids) == Counter(m[0].id for m in honest)
        in_store = [s.message.id for s in store.query(topics={"ok"}, limit=1000)]
        assert Counter(in_store) == Counter(m[0].id for m in honest)
        assert store.query(topics={"boom"}, limit=10) == []
        lines = [r for r in caplog.records if r.name == "edge_relay.hub"]
        # one line for the group, one for the bug (a failure no check saw coming)
        assert [r.levelname for r in lines] == ["WARNING", "ERROR"], [r.message for r in lines]
        assert "1 could not be" in lines[0].message
    finally:
        store.close()


async def test_an_unencodable_message_is_refused_before_it_joins_a_group(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "relay.db").open()
    try:
        async with Hub(store) as hub:
            # Built as dataclasses, not through from_fields (which refuses both since the
            # envelope boundary checks structured fields): the hub must not trust its callers.
            nan = Message(id="nan1", time=1, topic="ok", message="x",
                          actions=({"action": "view", "label": "l", "n": math.nan},))  # fmt: skip
            with pytest.raises(MessageError, match="actions"):
                await hub.publish([nan])
            lone = Message(id="lone1", time=1, topic="ok", message="x", extra={"tit": "\ud800"})
            with pytest.raises(MessageError, match="tit"):
                await hub.publish([lone])
            good = await hub.publish([_msg("ok", "fine")])
        assert [s.message.message for s in good] == ["fine"]
        assert [s.message.message for s in store.query(topics={"ok"}, limit=10)] == ["fine"]
    finally:
        store.close()


async def test_store_busy_fails_every_member_of_the_group(tmp_path: Path) -> None:
    store = Store(tmp_path / "relay.db", busy_timeout=0.05).open()
    other = Store(tmp_path / "relay.db").open()
    try:
        other.conn.execute("BEGIN IMMEDIATE")  # another writer holds the lock: busy
        async with Hub(store) as hub:
            results = await asyncio.gather(
                *[hub.publish([_msg("ok", f"m{i}")]) for i in range(5)], return_exceptions=True
            )
        assert [type(r) for r in results] == [StoreBusy] * 5
    finally:
        other.conn.execute("ROLLBACK")
        other.close()
        store.close()


async def test_the_same_id_encrypted_and_in_clear_is_kept_aside_not_dropped(
    tmp_path: Path,
) -> None:
    """Issue 15: the same id delivered encrypted and in clear is never merged. The agent keeps
    the first form and puts the other in ``rejected`` (agent.store.sealed); the relay must do
    the same, not let its id dedupe drop the second silently."""
    from agent.e2e import keys, seal

    key = bytes(range(32))
    kid = keys.kid_of(key)

    def sealed(mid: str) -> Message:
        inner = from_fields({"id": mid, "message": "Door opened"}, topic="alerts")
        return from_fields(seal.seal(inner, key, kid))

    def clear(mid: str) -> Message:
        return from_fields({"id": mid, "message": "Injected in clear"}, topic="alerts")

    store = Store(tmp_path / "relay.db").open()
    counted: list[int] = []
    try:
        async with Hub(store, on_rejected=counted.append) as hub:
            [first] = await hub.publish([sealed("x1")])
            assert await hub.publish([clear("x1")]) == []  # encrypted first, then in clear
            await hub.publish([clear("y1")])
            assert await hub.publish([sealed("y1")]) == []  # in clear first, then encrypted
            # one publish holding both forms (an upstream batch): the first wins
            both = await hub.publish([sealed("z1"), clear("z1")])
            assert {s.seq for s in both} == {both[0].seq}  # one stored message
            assert await hub.publish([sealed("x1")]) == []  # a redelivery: the usual no-op
        x, y = store.get("x1"), store.get("y1")
        assert x is not None and x.message.message == first.message.message
        assert seal.is_sealed(x.message) and store.e2e_of("x1") == ("jwe", None)
        assert y is not None and y.message.message == "Injected in clear"
        z = store.get("z1")
        assert z is not None and seal.is_sealed(z.message) and store.e2e_of("z1") == ("jwe", None)
        reasons = [r.reason for _, r in store.rejected_list()]
        assert len(reasons) == 3 and all(r.endswith("not merged") for r in reasons), reasons
        assert reasons[0].startswith("id x1 arrived in clear but is encrypted")
        assert reasons[1].startswith("id y1 arrived encrypted but is in clear")
        assert sum(counted) == 3 == store.rejected_count()
    finally:
        store.close()


async def test_a_sealed_message_stored_before_the_marks_comes_again_as_a_no_op(
    tmp_path: Path,
) -> None:
    """A relay before fac9fac stored end-to-end encrypted messages unmarked (e2e NULL). After
    the upgrade the same id coming again sealed (the broker's redelivery, a retained copy at
    each resubscribe, the echo of an outbox item queued before) is the usual no-op, not a
    'not merged' rejection: the upgrade marks the rows whose stored form is encrypted."""
    from agent.e2e import keys, seal

    key = bytes(range(32))
    inner = from_fields({"id": "o1", "message": "Door opened"}, topic="alerts")
    sealed = from_fields(seal.seal(inner, key, keys.kid_of(key)))
    clear = from_fields({"id": "c1", "message": "eyJ but. not. a. token"}, topic="alerts")
    path = tmp_path / "relay.db"
    with Store(path) as old:  # as a relay before fac9fac stored them
        old.insert_batch([sealed, clear], source="upstream")
        assert old.e2e_of("o1") == (None, None)
        with old.conn:  # the database as it was before the upgrade's migration
            old.conn.execute("DELETE FROM _migrations WHERE name = '015_sealed_marks'")
            old.conn.execute("UPDATE messages SET e2e = NULL")
    store = Store(path).open()
    counted: list[int] = []
    try:
        async with Hub(store, on_rejected=counted.append) as hub:
            assert await hub.publish([sealed], source="upstream") == []
        assert store.rejected_count() == 0 and counted == []
        assert store.e2e_of("o1") == ("jwe", None) and store.e2e_of("c1") == (None, None)
    finally:
        store.close()
