"""Nothing twice for id-less MQTT payloads: a plain-text message the broker resends (DUP)
after the agent committed it but before its PUBACK arrived gets its stored id back.

The store-level tests pin the rules (packet id reuse, same text again, other sources); the
process test makes the real crash happen: real mosquitto, real agent processes, the
agent's PUBACKs held in a stalled proxy, SIGKILL, restart on a fresh link.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.envelope import Message, from_fields
from agent.errors import StoreError
from agent.store import Redelivery, Store
from tests.helpers import complete_lines, wait_for
from tests.mosquitto import Mosquitto
from tests.mqtt_helpers import Agent, Publisher
from tests.netproxy import NetProxy

# --- the store's rules ------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "agent.db") as s:
        yield s


def plain(mid: str, text: str = "door opened") -> Message:
    return from_fields({"id": mid, "message": text, "time": 1000}, topic="t/a")


def key(packet_id: int, digest: bytes = b"D" * 16, dup: bool = False) -> Redelivery:
    return Redelivery(packet_id, digest, dup)


def test_a_resend_with_dup_takes_the_recorded_id(store: Store) -> None:
    first = store.insert_batch([plain("fresh1")], source="s", redelivery={"fresh1": key(7)})
    assert [s.message.id for s in first] == ["fresh1"]
    again = store.insert_batch(
        [plain("fresh2")], source="s", redelivery={"fresh2": key(7, dup=True)}
    )
    assert again == [] and store.count() == 1


def test_same_text_again_without_dup_is_a_new_message(store: Store) -> None:
    store.insert_batch([plain("a1")], source="s", redelivery={"a1": key(7)})
    # the broker reused packet id 7 (the first was acked) for the same text: a new message
    new = store.insert_batch([plain("a2")], source="s", redelivery={"a2": key(7)})
    assert [s.message.id for s in new] == ["a2"]
    # ... and the record now names the newer one: its resend maps to a2, not a1
    assert store.insert_batch([plain("a3")], source="s", redelivery={"a3": key(7, dup=True)}) == []
    assert store.count() == 2


def test_dup_with_another_digest_or_source_or_packet_id_is_new(store: Store) -> None:
    store.insert_batch([plain("b1")], source="s", redelivery={"b1": key(7)})
    cases = {
        "b2": ("s", key(7, b"E" * 16, dup=True)),  # other topic/payload under packet id 7
        "b3": ("other", key(7, dup=True)),  # another server's packet id 7
        "b4": ("s", key(8, dup=True)),  # a packet id never recorded
    }
    for mid, (source, k) in cases.items():
        new = store.insert_batch([plain(mid)], source=source, redelivery={mid: k})
        assert [s.message.id for s in new] == [mid]
    assert store.count() == 4


def test_a_failed_batch_records_nothing(store: Store) -> None:
    store.conn.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON messages BEGIN SELECT RAISE(ABORT, 'x'); END"
    )
    with pytest.raises(StoreError):
        store.insert_batch([plain("c1")], source="s", redelivery={"c1": key(9)})
    store.conn.execute("DROP TRIGGER boom")
    assert store.conn.execute("SELECT count(*) FROM mqtt_redelivery").fetchone()[0] == 0
    # so the resend is not mistaken for a stored message: it is stored now
    new = store.insert_batch([plain("c2")], source="s", redelivery={"c2": key(9, dup=True)})
    assert [s.message.id for s in new] == ["c2"]


def test_pruned_messages_take_their_records_along(store: Store) -> None:
    store.insert_batch([plain("d1")], source="s", redelivery={"d1": key(3)})
    store.mark_notified(1)
    assert store.prune(max_age=0, max_messages=0, now=2e9) == 1
    assert store.conn.execute("SELECT count(*) FROM mqtt_redelivery").fetchone()[0] == 0


# --- real processes ----------------------------------------------------------------------------


def stored_texts(home: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(home / "data" / "pushagent.db", timeout=10)
    try:
        return [(r[0], r[1]) for r in conn.execute("SELECT id, message FROM messages ORDER BY seq")]
    finally:
        conn.close()


def printed(agent: Agent) -> list[dict[str, object]]:
    if not agent.out.exists():
        return []
    return [json.loads(line) for line in complete_lines(agent.out.read_bytes())]


def test_plain_text_resent_after_a_crash_is_stored_and_shown_once(
    home: Path, mosquitto: Mosquitto
) -> None:
    n = 60  # below the fixture broker's max_inflight_messages (100): all sent before any ack
    texts = [f"plain text {i}" for i in range(n)]
    with NetProxy("127.0.0.1", mosquitto.port) as proxy:
        agent = Agent(home, f"mqtt://127.0.0.1:{proxy.port}").start()
        proxy.stall(direction="up")  # from now on the agent's PUBACKs never reach the broker
        with Publisher(mosquitto.port) as pub:
            pub.publish("t/plain", (t.encode() for t in texts))
            wait_for(lambda: len(stored_texts(home)) == n, timeout=30, what=f"{n} stored")
            wait_for(lambda: len(printed(agent)) == n, timeout=30, what=f"{n} printed")
            agent.kill()  # committed and shown, but the broker never saw an ack
            agent.start()  # a fresh link: the broker resends all n with DUP set
            pub.publish("t/plain", [json.dumps({"id": "after", "message": "end"}).encode()])
            # the broker sends what was in flight first, so once "after" is stored the resends
            # have been handled
            wait_for(lambda: "after" in dict(stored_texts(home)), timeout=30, what="marker")
            wait_for(lambda: len(printed(agent)) >= n + 1, timeout=30, what="marker printed")
        assert agent.stop() == 0
    # one line per committed batch: what arrives before the SUBACK is committed on its own
    resends = re.findall(r"(\d+) of (\d+) messages are resends \(DUP\)", agent.log())
    assert sum(int(d) for d, _ in resends) == n, agent.log()[-2000:]
    assert all(d == t for d, t in resends), resends
    rows = stored_texts(home)
    assert Counter(text for _, text in rows) == Counter([*texts, "end"])
    lines = printed(agent)
    assert Counter(str(line["message"]) for line in lines) == Counter([*texts, "end"])
    assert sorted(str(line["id"]) for line in lines) == sorted(i for i, _ in rows)


def test_the_same_plain_text_published_twice_is_stored_twice(
    home: Path, mosquitto: Mosquitto
) -> None:
    agent = Agent(home, mosquitto.url).start()
    with Publisher(mosquitto.port) as pub:
        pub.publish("t/same", [b"door opened", b"door opened", b'{"message": "door opened"}'])
        wait_for(lambda: len(stored_texts(home)) == 3, timeout=30, what="3 stored")
        agent.stop()
        # queued while the agent is away, delivered together on its return: still each one
        pub.publish("t/same", [b"door opened", b"door opened"])
        agent.start()
        wait_for(lambda: len(stored_texts(home)) == 5, timeout=30, what="5 stored")
        wait_for(lambda: len(printed(agent)) == 5, timeout=30, what="5 printed")
    assert agent.stop() == 0
    rows = stored_texts(home)
    assert [text for _, text in rows] == ["door opened"] * 5
    assert len({i for i, _ in rows}) == 5
    assert len({str(line["id"]) for line in printed(agent)}) == 5
