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
            nan = from_fields({"message": "x", "actions": [
                {"action": "view", "label": "l", "n": math.nan}]}, topic="ok")  # fmt: skip
            with pytest.raises(MessageError, match="actions"):
                await hub.publish([nan])
            lone = from_fields({"message": "x", "tit": "\ud800"}, topic="ok")
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
