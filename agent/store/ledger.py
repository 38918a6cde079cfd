"""States, receipts, the outbox and retention: what the store keeps besides the messages
themselves. Part of ``agent.store``."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Container, Iterable, Mapping, Sequence
from typing import Any

from agent.envelope import dumps
from agent.states import STATES, SYNCED, StateEvent, rank
from agent.store.base import _Base
from agent.store.schema import (
    REJECTED_MAX_AGE,
    OutboxItem,
    Rejected,
    _insert_rejected,
    chunks,
    placeholders,
)
from agent.store.syncstate import prune_states


class _Ledger(_Base):
    # --- states, receipts and the outbox ---------------------------------------------------------

    def record_states(
        self,
        events: Sequence[tuple[str, str, float]],
        *,
        receipt_destination: str | None = None,
        device: str = "",
        owner: str = "",
        max_devices: int | None = None,
        device_name: str = "",
        state_prefix: str | None = None,
    ) -> int:
        """Record ``(message_id, state, time)`` events; queue receipts if a destination is set.

        A message's visible state only moves forward (agent.states: read beats clicked beats
        displayed); ``undecryptable`` stays until a key import decrypts it (agent.store.sealed).
        Unknown ids are ignored. Returns how many events named a stored message. ``owner``
        is who reported them (the relay: the caller's token name; the agent itself: ''):
        receipts are keyed by (id, owner, state, device), first one wins. ``max_devices``
        bounds the devices one owner may report per message: an event for another device
        beyond it is ignored (not counted in the result).

        Receipts carry ``device_name`` beside ``device`` (never the topic: the relay knows
        the message), except those of messages that arrived end-to-end encrypted, which
        carry only the id, the state, the device id and the time (docs/E2E.md); their
        state-sync items drop ``device_name`` too. With
        ``state_prefix`` (state sync), each synced state (agent.states.SYNCED) that moved a
        message forward also queues a ``state`` item for ``<state_prefix>/<topic>``: the
        MQTT state topic (a relay syncs from the receipt itself; its transport drops these).
        """
        for _, state, _ in events:
            if state not in STATES:
                raise ValueError(f"unknown state {state!r}; expected one of {', '.join(STATES)}")
        with self._write() as conn:
            ids = [e[0] for e in events]
            known, sealed = self._topics_states(conn, ids)
            valid = [e for e in events if e[0] in known]
            if max_devices is not None:
                room = self._device_room(conn, {e[0] for e in valid}, owner, device, max_devices)
                valid = [e for e in valid if e[0] in room]
            moved = _advance(conn, valid, known)
            conn.executemany(
                "INSERT OR IGNORE INTO receipts (message_id, owner, state, device, time) "
                "VALUES (?, ?, ?, ?, ?)",
                [(mid, owner, st, device, t) for mid, st, t in valid],
            )
            if valid and device and device_name:  # the owner's device, by its human name
                conn.execute(
                    "INSERT OR REPLACE INTO devices VALUES (?, ?, ?, ?)",
                    (owner, device, device_name, time.time()),
                )
            if receipt_destination is not None:
                self._queue_receipts(conn, valid, receipt_destination, device,
                                     name=device_name, sealed=sealed)  # fmt: skip
                if state_prefix is not None:
                    topics = {mid: known[mid][0] for mid, _, _ in moved}
                    synced = [e for e in moved if e[1] in SYNCED]
                    _queue_states(conn, synced, state_prefix, topics, device, device_name, sealed)
        return len(valid)

    @staticmethod
    def _topics_states(
        conn: sqlite3.Connection, ids: list[str]
    ) -> tuple[dict[str, tuple[str, str]], set[str]]:
        """id -> (topic, state) of the stored ones among ``ids``, and the ids among them that
        arrived end-to-end encrypted."""
        found: dict[str, tuple[str, str]] = {}
        sealed: set[str] = set()
        for chunk in chunks(ids):
            rows = conn.execute(
                "SELECT id, topic, state, e2e IS NOT NULL FROM messages "
                f"WHERE id IN ({placeholders(chunk)})",
                chunk,
            )
            for m, t, s, e2e in rows:
                found[str(m)] = (str(t), str(s))
                if e2e:
                    sealed.add(str(m))
        return found, sealed

    @staticmethod
    def _device_room(
        conn: sqlite3.Connection, ids: Iterable[str], owner: str, device: str, limit: int
    ) -> set[str]:
        """The ids for which ``owner`` may record ``device``: it is already one of theirs, or
        they report fewer than ``limit`` devices for it (a walk of the receipts key prefix)."""
        room = set()
        for mid in ids:
            n, has = conn.execute(
                "SELECT count(DISTINCT device), coalesce(max(device = ?), 0) FROM receipts "
                "WHERE message_id = ? AND owner = ?",
                (device, mid, owner),
            ).fetchone()
            if has or n < limit:
                room.add(mid)
        return room

    @staticmethod
    def _queue_receipts(
        conn: sqlite3.Connection,
        events: Sequence[tuple[str, str, float]],
        destination: str,
        device: str,
        *,
        name: str = "",
        sealed: Container[str] = (),
    ) -> None:
        """``receipt`` outbox items; those of the ``sealed`` ids (end-to-end encrypted
        messages) without the device's name (docs/E2E.md)."""
        rows = []
        for message_id, state, at in events:
            body: dict[str, Any] = {"id": message_id, "state": state, "time": int(at)}
            if device:
                body["device"] = device
            if name and message_id not in sealed:
                body["device_name"] = name
            rows.append(("receipt", destination, dumps(body), at))
        conn.executemany(
            "INSERT INTO outbox (kind, destination, payload, created) VALUES (?, ?, ?, ?)", rows
        )

    def receipts_for(self, message_id: str) -> list[tuple[str, str, float]]:
        """``(state, device, time)`` for each receipt recorded for a message."""
        rows = self._read(
            "SELECT state, device, time FROM receipts WHERE message_id = ? ORDER BY time",
            (message_id,),
        )
        return [(str(s), str(d), float(t)) for s, d, t in rows]

    def receipts_by_owner(self, message_id: str) -> list[tuple[str, str, str, float]]:
        """``(owner, device, state, time)`` for each receipt of a message, oldest first."""
        rows = self._read(
            "SELECT owner, device, state, time FROM receipts WHERE message_id = ? "
            "ORDER BY time, rowid",
            (message_id,),
        )
        return [(str(o), str(d), str(s), float(t)) for o, d, s, t in rows]

    def device_names(self, message_id: str) -> dict[tuple[str, str], str]:
        """``(owner, device) -> device_name`` for the devices with receipts for a message."""
        rows = self._read(
            "SELECT DISTINCT r.owner, r.device, d.name FROM receipts r JOIN devices d "
            "ON d.owner = r.owner AND d.device = r.device WHERE r.message_id = ?",
            (message_id,),
        )
        return {(str(o), str(d)): str(n) for o, d, n in rows}

    def topic_stats(self) -> dict[str, dict[str, int]]:
        """Per topic: stored messages (``published``) and receipts per state (the relay's stats)."""
        table: dict[str, dict[str, int]] = {}
        for topic, n in self._read("SELECT topic, count(*) FROM messages GROUP BY topic"):
            table[str(topic)] = {"published": int(n), "delivered": 0, "displayed": 0, "clicked": 0}
        rows = self._read(
            "SELECT m.topic, r.state, count(*) FROM receipts r JOIN messages m "
            "ON m.id = r.message_id GROUP BY m.topic, r.state"
        )
        for topic, state, n in rows:
            table.setdefault(str(topic), {"published": 0})[str(state)] = int(n)
        return table

    def outbox_add(self, kind: str, destination: str, payload: str) -> int:
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO outbox (kind, destination, payload, created) VALUES (?, ?, ?, ?)",
                (kind, destination, payload, time.time()),
            )
            return int(cur.lastrowid or 0)

    def outbox_peek(self, limit: int = 100, kind: str | None = None) -> list[OutboxItem]:
        """The oldest waiting items (they stay until ``outbox_done``)."""
        sql = "SELECT seq, kind, destination, payload, attempts FROM outbox"
        params: list[Any] = []
        if kind is not None:
            sql += " WHERE kind = ?"
            params.append(kind)
        rows = self._read(sql + " ORDER BY seq LIMIT ?", [*params, limit])
        return [OutboxItem(int(s), str(k), str(d), str(p), int(a)) for s, k, d, p, a in rows]

    def outbox_done(self, seqs: Iterable[int]) -> None:
        """The upstream acknowledged these items: remove them."""
        with self._write() as conn:
            conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])

    def outbox_failed(self, seqs: Iterable[int]) -> None:
        with self._write() as conn:
            conn.executemany(
                "UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?", [(s,) for s in seqs]
            )

    def outbox_len(self) -> int:
        return int(self._read("SELECT count(*) FROM outbox")[0][0])

    # --- rejected payloads ----------------------------------------------------------------------

    def add_rejected(self, items: Sequence[Rejected]) -> None:
        """Keep rejected payloads in their own transaction (the relay's bridge, before acking)."""
        if items:
            with self._write() as conn:
                _insert_rejected(conn, items)

    def rejected_count(self) -> int:
        """How many payloads were ever rejected here (monotonic: the AUTOINCREMENT counter, so
        retention does not make it go down; the table keeps the newest REJECTED_KEEP)."""
        rows = self._read("SELECT seq FROM sqlite_sequence WHERE name = 'rejected'")
        return int(rows[0][0]) if rows else 0

    def rejected_list(self, limit: int = 100) -> list[tuple[int, Rejected]]:
        """The newest ``limit`` rejected payloads as ``(seq, item)``, newest last."""
        rows = self._read(
            "SELECT seq, time, source, topic, reason, payload, size FROM rejected "
            "ORDER BY seq DESC LIMIT ?",
            (limit,),
        )
        out = [
            (int(seq), Rejected(float(t), str(src), topic, str(why), bytes(raw), int(size)))
            for seq, t, src, topic, why, raw, size in rows
        ]
        return out[::-1]

    # --- retention ------------------------------------------------------------------------------

    def prune(self, *, max_age: float, max_messages: int, now: float | None = None) -> int:
        """Delete messages older than ``max_age`` seconds or beyond the newest ``max_messages``.

        A message's age counts from the later of its publish ``time`` and when it was stored:
        a publisher without a real-time clock (a Pi without NTP stamps 1970) must not make
        today's message vanish at the next prune. Messages not yet handed to the notifier are
        kept whatever their age. Returns how many were deleted.
        """
        now = now if now is not None else time.time()
        cutoff = now - max_age
        keep_after = self.notified_seq()
        with self._write() as conn:
            # Rejected payloads have their own retention (count bounded at insert).
            conn.execute("DELETE FROM rejected WHERE time < ?", (now - REJECTED_MAX_AGE,))
            conn.execute(  # the durable copy of the hand-off mark (see _mark_floor)
                "INSERT OR REPLACE INTO meta VALUES ('notified_seq', ?)", (str(keep_after),)
            )
            deleted = conn.execute(
                "DELETE FROM messages WHERE max(time, received) < ? AND seq <= ?",
                (cutoff, keep_after),
            ).rowcount
            deleted += conn.execute(
                "DELETE FROM messages WHERE seq <= ? AND seq <= "
                "(SELECT seq FROM messages ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                (keep_after, max_messages),
            ).rowcount
            if deleted:
                conn.execute(
                    "DELETE FROM receipts WHERE message_id NOT IN (SELECT id FROM messages)"
                )
                conn.execute(
                    "DELETE FROM mqtt_redelivery WHERE id NOT IN (SELECT id FROM messages)"
                )
                conn.execute("DELETE FROM held WHERE message_id NOT IN (SELECT id FROM messages)")
            prune_states(conn, cutoff)
            conn.execute("DELETE FROM devices WHERE seen < ?", (cutoff,))
        return deleted


def _advance(
    conn: sqlite3.Connection,
    events: Sequence[tuple[str, str, float]],
    known: dict[str, tuple[str, str]],
) -> list[tuple[str, str, float]]:
    """Move each message's state forward (agent.states), in order; the events that did."""
    moved = []
    for message_id, state, at in events:
        topic, old = known[message_id]
        if rank(state) > rank(old):
            known[message_id] = (topic, state)
            moved.append((message_id, state, at))
    conn.executemany("UPDATE messages SET state = ? WHERE id = ?", [(s, i) for i, s, _ in moved])
    return moved


def _queue_states(
    conn: sqlite3.Connection,
    events: Sequence[tuple[str, str, float]],
    prefix: str,
    topics: Mapping[str, str],
    device: str,
    name: str,
    sealed: Container[str],
) -> None:
    """``state`` outbox items, one per synced event, for ``<prefix>/<topic>`` (state sync);
    no device name for the ``sealed`` ids, as in their receipts."""
    rows = []
    for mid, state, at in events:
        ev = StateEvent(mid, state, device, at, topics[mid], "" if mid in sealed else name)
        rows.append(("state", f"{prefix}/{ev.topic}", dumps(ev.wire()), at))
    conn.executemany(
        "INSERT INTO outbox (kind, destination, payload, created) VALUES (?, ?, ?, ?)", rows
    )
