"""The relay's replay cache (edge_relay.replay.ReplayCache) on a real store's rows: a row seen
before is not encoded again, a row changed in place is, and the cache's bytes stay bounded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.envelope import from_fields
from agent.store import Store
from edge_relay.live import text_frame, wire
from edge_relay.replay import _ENTRY, ReplayCache


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "relay.db").open()
    msgs = [from_fields({"message": f"m{i} " + "x" * (i % 7) * 40, "priority": 1 + i % 5},
                        topic="t") for i in range(50)]  # fmt: skip
    s.insert_batch(msgs, source="up")
    yield s
    s.close()


def test_a_row_seen_before_comes_back_encoded_once(store: Store) -> None:
    cache = ReplayCache()
    rows = store.query_rows(topics=["t"], newest=False)
    first = [cache.live(r) for r in rows]
    again = [cache.live(r) for r in store.query_rows(topics=["t"], newest=False)]
    assert all(a is b for a, b in zip(first, again, strict=True))
    assert (cache.misses, cache.hits) == (50, 50)
    for live, stored in zip(first, store.query(topics=["t"], newest=False), strict=True):
        assert live.stored == stored
        assert live.text == wire(stored)
        assert live.frame == text_frame(wire(stored).encode())


def test_a_row_changed_in_place_is_encoded_again(store: Store) -> None:
    cache = ReplayCache()
    before = cache.live(store.query_rows(topics=["t"], newest=False)[0])
    with store.conn:  # an in-place change, as the file cache's attachment URL rewrite makes
        store.conn.execute("UPDATE messages SET title = 'changed' WHERE seq = ?",
                           (before.stored.seq,))  # fmt: skip
    after = cache.live(store.query_rows(topics=["t"], newest=False)[0])
    assert after is not before
    assert after.stored.message.title == "changed"
    assert '"title":"changed"' in after.text
    assert len(cache) == 1


def test_the_cache_keeps_within_its_bytes_dropping_the_least_recently_used(store: Store) -> None:
    rows = store.query_rows(topics=["t"], newest=False)
    limit = 10 * (_ENTRY + 2 * 300)
    cache = ReplayCache(limit)
    for r in rows:
        cache.live(r)
        assert cache.size <= limit
    kept = len(cache)
    assert 0 < kept < len(rows)
    cache.live(rows[-kept])  # the oldest one still kept: now the most recent
    cache.live(rows[0])  # a miss: pushes out the least recently used, not rows[-kept]
    hits = cache.hits
    cache.live(rows[-kept])
    assert cache.hits == hits + 1


def test_a_message_larger_than_the_cache_is_encoded_but_not_kept(store: Store) -> None:
    cache = ReplayCache(limit=_ENTRY)
    row = store.query_rows(topics=["t"], newest=False)[0]
    live = cache.live(row)
    assert live.text == wire(Store.decode(row))
    assert (len(cache), cache.size) == (0, 0)


@pytest.mark.parametrize(
    ("text", "extra"),
    [
        ("x" * 4000 + "\U0001f6a8", {}),  # one emoji: the whole str is 4 bytes a character
        (
            "file",
            {
                "attachment": {
                    "name": "a.bin",
                    "url": "data:application/octet-stream;base64," + "AQEB" * 40_000,
                }
            },
        ),  # inline: held four times
    ],
    ids=["4k-with-emoji", "inline-data-url"],
)
def test_the_memory_the_cache_holds_stays_within_its_limit(
    tmp_path: Path, text: str, extra: dict[str, object]
) -> None:
    """The limit is the memory the entries hold (tracemalloc), not 2 x their frames' UTF-8
    length: that held 3.9x the limit for 4 KiB messages with an emoji and 2.0x for inline
    attachments."""
    import gc
    import tracemalloc

    limit = 1024 * 1024
    with Store(tmp_path / "big.db") as s:
        for _ in range(8):
            s.insert_batch([from_fields({"message": text, **extra}, topic="t")
                            for _ in range(40)])  # fmt: skip
        cache = ReplayCache(limit)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            rows = s.query_rows(topics=["t"], newest=False, limit=1000)
            for r in rows:
                cache.live(r)
            assert len(cache) < len(rows) == 320  # the limit was reached
            del rows, r
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    assert cache.size <= limit
    assert held <= 1.1 * limit, f"{held / limit:.2f}x the limit held by {len(cache)} entries"
