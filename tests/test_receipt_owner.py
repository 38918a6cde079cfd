"""Migration 006_receipt_owner: receipts keyed by who posted them, old rows kept as owner ''."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.envelope import from_fields
from agent.store import MIGRATIONS, Store
from agent.store import base as store_base


def test_old_receipts_survive_the_migration_as_the_local_owner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "old.db"
    before = tuple(m for m in MIGRATIONS if m[0] < "006")
    monkeypatch.setattr(store_base, "MIGRATIONS", before)
    with Store(db) as old:
        old.insert_batch([from_fields({"id": "aaaaaaaaaaaa", "message": "m"}, topic="t")])
    with sqlite3.connect(db) as conn:  # a receipt as a store before 006 holds it
        conn.execute("INSERT INTO receipts VALUES ('aaaaaaaaaaaa', 'displayed', 'phone', 5.0)")
    monkeypatch.setattr(store_base, "MIGRATIONS", MIGRATIONS)
    with Store(db) as s:
        assert s.receipts_by_owner("aaaaaaaaaaaa") == [("", "phone", "displayed", 5.0)]
        # the same (id, state, device) from two owners: two receipts, the first kept as it was
        event = [("aaaaaaaaaaaa", "displayed", 9.0)]
        assert s.record_states(event, device="phone", owner="bob") == 1
        assert s.record_states(event, device="phone") == 1  # the local owner's: already there
        assert s.receipts_by_owner("aaaaaaaaaaaa") == [
            ("", "phone", "displayed", 5.0), ("bob", "phone", "displayed", 9.0)]  # fmt: skip
        assert s.receipts_for("aaaaaaaaaaaa") == [("displayed", "phone", 5.0),
                                                  ("displayed", "phone", 9.0)]  # fmt: skip
        applied = [r[0] for r in s.conn.execute("SELECT name FROM _migrations ORDER BY name")]
        assert "006_receipt_owner" in applied
