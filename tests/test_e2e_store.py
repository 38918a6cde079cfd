"""The store's side of E2E topics (agent.store.sealed, migration 009_undecryptable): a
real SQLite file, no mocks."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from agent.e2e import keys, seal
from agent.envelope import from_fields
from agent.store import Store
from agent.store.sealed import Sealed

KEY = bytes(range(32))
KID = keys.kid_of(KEY)


def sealed_outer(mid: str, text: str = "Door opened") -> object:
    inner = from_fields({"id": mid, "time": 1_700_000_000, "message": text, "title": "Hall"},
                        topic="alerts")  # fmt: skip
    return from_fields(seal.seal(inner, KEY, KID))


def opened(mid: str, keyset: dict[str, bytes]) -> seal.Opened:
    outer = sealed_outer(mid)
    assert not isinstance(outer, str)
    return seal.open_message(outer, keyset)  # type: ignore[arg-type]


def test_undecryptable_is_stored_with_its_ciphertext_then_decrypted_in_place(
    tmp_path: Path,
) -> None:
    with Store(tmp_path / "a.db") as store:
        o = opened("m1", {})
        [s] = store.insert_batch([o.message], encrypted=[Sealed(o.ciphertext)],
                                 receipt_destination="r/dev")  # fmt: skip
        assert s.state == "undecryptable"
        got = store.get("m1")
        assert got is not None and got.state == "undecryptable"
        assert got.message.message == "encrypted message on alerts" and got.message.title is None
        assert store.e2e_of("m1") == ("jwe", o.ciphertext)
        # the notifier showing the stand-in does not make it look readable
        store.record_states([("m1", "displayed", 1.0)], receipt_destination="r/dev")
        assert store.get("m1").state == "undecryptable"  # type: ignore[union-attr]
        # receipts carry ids and states only
        bodies = [json.loads(i.payload) for i in store.outbox_peek(10)]
        assert {frozenset(b) for b in bodies} == {frozenset({"id", "state", "time"})}
        assert all("Door" not in i.payload and "alerts" not in i.payload
                   for i in store.outbox_peek(10))  # fmt: skip
        [(pending, token)] = store.undecryptable("alerts")
        assert pending.seq == s.seq and token == o.ciphertext
        assert store.undecryptable("other") == []
        again = opened("m1", {KID: KEY})
        assert again.ciphertext is None
        assert store.decrypted([again.message]) == 1
        row = store.get("m1")
        assert row is not None and row.seq == s.seq and row.state == "received"
        assert row.message.message == "Door opened" and row.message.title == "Hall"
        assert store.e2e_of("m1") == ("jwe", None)
        assert [x.message.id for x in store.query(search="Door")] == ["m1"]
        assert store.query(search="encrypted") == []
        assert store.decrypted([again.message]) == 0  # only undecryptable rows change


def test_the_same_id_encrypted_and_in_clear_is_never_merged(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db") as store:
        o = opened("m1", {KID: KEY})
        store.insert_batch([o.message], encrypted=[Sealed()])
        clear = from_fields({"id": "m1", "message": "Injected", "title": "Hall"}, topic="alerts")
        assert store.insert_batch([clear]) == []
        row = store.get("m1")
        assert row is not None and row.message.message == "Door opened"
        [(_, rej)] = store.rejected_list()
        assert "arrived in clear but is encrypted in the store" in rej.reason
        assert rej.reason.endswith("not merged")
        # the other way round: a clear message first, then an encrypted one with its id
        store.insert_batch([from_fields({"id": "m2", "message": "plain"}, topic="alerts")])
        o2 = opened("m2", {KID: KEY})
        assert store.insert_batch([o2.message], encrypted=[Sealed()]) == []
        assert store.e2e_of("m2") == (None, None)
        assert store.get("m2").message.message == "plain"  # type: ignore[union-attr]
        why = store.rejected_list()[-1][1].reason
        assert "arrived encrypted but is in clear in the store" in why
        # a redelivery with the same status is the usual no-op, not a rejection
        assert store.insert_batch([o.message], encrypted=[Sealed()]) == []
        assert store.rejected_count() == 2
        # within one batch: the first form wins, the other is kept aside
        o3 = opened("m3", {KID: KEY})
        clear3 = from_fields({"id": "m3", "message": "Injected"}, topic="alerts")
        [s3] = store.insert_batch([o3.message, clear3, o3.message],
                                  encrypted=[Sealed(), None, Sealed()])  # fmt: skip
        assert s3.message.message == "Door opened" and store.rejected_count() == 3


def test_receipts_and_states_of_encrypted_messages_carry_no_device_name(tmp_path: Path) -> None:
    """Issue 15: receipts of encrypted messages carry only ids and states (with the opaque
    device id and the state's time; docs/E2E.md says why), never the device's name (by
    default the hostname); the MQTT state-sync items likewise. Clear messages keep it."""
    with Store(tmp_path / "a.db") as store:
        who = {"receipt_destination": "r/dev", "device": "pushagent-x1", "device_name": "nas-host"}
        o, u = opened("e1", {KID: KEY}), opened("e2", {})
        clear = from_fields({"id": "c1", "message": "plain"}, topic="alerts")
        store.insert_batch([o.message, u.message, clear],
                           encrypted=[Sealed(), Sealed(u.ciphertext), None], **who)  # fmt: skip
        store.record_states([(i, "read", 5.0) for i in ("e1", "e2", "c1")],
                            state_prefix="s", **who)  # fmt: skip
        items = store.outbox_peek(20)
        keys = {(i.kind, json.loads(i.payload)["id"], json.loads(i.payload)["state"]):
                set(json.loads(i.payload)) for i in items}  # fmt: skip
        receipt = {"id", "state", "device", "time"}
        assert keys[("receipt", "e1", "delivered")] == receipt
        assert keys[("receipt", "e1", "read")] == receipt
        assert keys[("receipt", "e2", "delivered")] == receipt
        assert keys[("receipt", "e2", "read")] == receipt
        assert keys[("state", "e1", "read")] == {"event", "id", "state", "device", "time",
                                                  "topic"}  # fmt: skip
        assert keys[("receipt", "c1", "delivered")] == receipt | {"device_name"}
        assert keys[("state", "c1", "read")] >= {"device_name"}
        assert not any("nas-host" in i.payload for i in items if '"c1"' not in i.payload)


def test_migration_adds_the_columns_to_an_existing_database(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with Store(path) as store:
        store.insert_batch([from_fields({"id": "old", "message": "x"}, topic="t")])
    with sqlite3.connect(path) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY rowid")]
        cols = [r[1] for r in conn.execute("PRAGMA table_info(messages)")]
    assert "009_undecryptable" in names and {"e2e", "ciphertext"} <= set(cols)
