"""The one module that owns SQLite.

Theory of operation
-------------------
Every message is written here before anything acknowledges it. A batch of messages goes in
with ``insert_batch`` in ONE ``BEGIN IMMEDIATE`` transaction (group commit): the ids already
present are looked up first, only the new ones are inserted (the UNIQUE id makes a redelivery
a no-op even if two writers race), and in the same transaction go the source's cursor
(``since=`` position) and the ``delivered`` receipts for the outbox. So after a SIGKILL the
batch, its cursor and its receipts are all there or all absent, and the caller acks only
after ``insert_batch`` returned.

``seq`` (AUTOINCREMENT, never reused) is the receive order. The notifier hand-off is tracked
by the ``notified_seq`` mark: messages above it were stored but not yet handed to the screen;
a restarted agent hands them over first. The mark is advanced right after the hand-off, so a
crash can at worst repeat the hand-off of one batch (see docs/ARCHITECTURE.md).

WAL mode: a reader (``pushagent history``) never blocks the writer and never sees a torn
batch. ``synchronous=FULL``: a committed (and so acknowledged) message survives power loss.
Schema changes are named, ordered migrations recorded in ``_migrations``.

All methods are synchronous and thread-safe (one connection behind a lock); asyncio callers
use ``asyncio.to_thread``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from agent.envelope import Message
from agent.states import STATES, StateEvent
from agent.store import sealed, sequences
from agent.store.acks import _Acks
from agent.store.analytics import _Analytics
from agent.store.files import _Files
from agent.store.ledger import _Ledger
from agent.store.migrations import MIGRATIONS
from agent.store.scheduled import _Scheduled
from agent.store.schema import (
    _SEARCH,
    _SELECT,
    OutboxItem,
    Redelivery,
    Rejected,
    Row,
    Stored,
    _fts_query,
    _insert_new,
    _insert_rejected,
    _queue_forward,
    _redelivered,
    _stored,
)
from agent.store.sealed import _Sealed
from agent.store.syncstate import _SyncState, apply_pending
from agent.timeparse import Since

__all__ = [
    "MIGRATIONS", "STATES", "OutboxItem", "Redelivery", "Rejected", "Row", "Store", "Stored",
]  # fmt: skip


class Store(_SyncState, _Sealed, _Scheduled, _Ledger, _Files, _Analytics, _Acks):
    """The agent's (and the relay's) SQLite database. Use as a context manager."""

    # --- messages ---------------------------------------------------------------------------

    def insert_batch(
        self,
        messages: Sequence[Message],
        *,
        source: str | None = None,
        cursor: tuple[str, str] | None = None,
        receipt_destination: str | None = None,
        device: str = "",
        device_name: str = "",
        forward: Callable[[Message], str | None] | None = None,
        redelivery: Mapping[str, Redelivery] | None = None,
        rejected: Sequence[Rejected] = (),
        cursor_id: str | None = None,
        encrypted: Sequence[sealed.Sealed | None] | None = None,
        not_merged: list[Rejected] | None = None,
    ) -> list[Stored]:
        """Store a batch in one transaction; return the messages that were new, in order.

        ``cursor=(source, subscription)`` saves the last message id of the batch as that
        subscription's position, atomically with the messages. ``receipt_destination`` queues
        a ``delivered`` receipt for each new message in the outbox, in the same transaction
        (from ``device``, named ``device_name``). States other devices reported before a
        message arrived (``pending_states``) are applied to it in this transaction too.
        ``forward(message)`` naming a destination queues the message itself in the outbox
        (kind ``message``), in the same transaction (the relay's upstream forwarding).

        ``redelivery`` maps the id that decode gave an id-less MQTT message (plain text, an
        envelope without ``id``) to where it came from (``Redelivery``). Each such message's
        ``(source, packet id) -> (digest, id)`` is recorded in this transaction; one that
        arrives with DUP set and finds its packet id recorded with the same digest is the
        broker resending a message stored before a crash (committed, PUBACK lost): it takes
        the recorded id, so the UNIQUE id makes it a no-op. Corner cases:

        * Packet ids are reused once acked: a later message with the same packet id replaces
          the record, so only the LAST id-less message per packet id is remembered (the
          table holds at most 65,535 rows per source).
        * The same text published again is a new message: without DUP it always gets a new
          id; with DUP but a different digest (another topic or payload) too.
        * Residual: a message byte-identical (same topic) to the last one recorded under its
          packet id, whose first delivery was cut before its batch committed, and which the
          broker then resends with DUP, is taken for that earlier message. It needs the
          broker to have reused the packet id for identical bytes (mosquitto and EMQX number
          sequentially: 65,535 packets apart) and a crash or dropped link at that moment.
        * ``source`` keys the records: two servers' packet ids never mix. The relay's
          upstream bridge passes the same mapping under its source ``upstream``.
        * A ``Redelivery`` with ``packet_id`` None (packet ids prove nothing on that broker)
          only records its topic; with ``retained`` (a SUBSCRIBE's QoS 1 copy of a retained
          message) it may take the id of the last id-less message on its topic in the same
          broker session (``agent.store.retained`` has the rule and why it is a proof).

        ``rejected`` payloads of the same batch (``Rejected``) go into the ``rejected`` table
        in this transaction, so acknowledging the batch never loses one unseen. The cursor's
        position is the last message's id unless ``cursor_id`` names a later one (a rejected
        ntfy frame's id: a reconnect then does not fetch it again).

        ``encrypted``, one item per message, says which arrived end-to-end encrypted
        (``Sealed``, with the JWE when it could not be decrypted: stored ``undecryptable``)
        and which in clear (None); an id stored, or earlier in the batch, with the other
        encryption status is kept in ``rejected``, never merged (agent.store.sealed); those
        records are also appended to ``not_merged`` when it is given (the relay counts them).
        """
        if not messages and not rejected:
            return []
        now = time.time()
        with self._write() as conn:
            if redelivery:
                messages = _redelivered(conn, messages, source or "", redelivery)
            last_id = messages[-1].id if messages else None  # even if screened out below
            known = self._existing_ids(conn, [m.id for m in messages])
            marks: dict[str, sealed.Sealed] = {}
            if encrypted is not None or known:
                messages, marks, mixed = sealed.screen(
                    conn, messages, encrypted, known, source, now
                )
                rejected = [*rejected, *mixed] if mixed else rejected
                if mixed and not_merged is not None:
                    not_merged.extend(mixed)
            fresh: list[Message] = []
            for m in messages:
                if m.id not in known:
                    known.add(m.id)
                    fresh.append(m)
            tokens = {i: f.ciphertext for i, f in marks.items()} if marks else None
            first = _insert_new(conn, fresh, source, now, tokens)
            if fresh:
                sequences.record(conn, fresh, now)
            # only the undecryptable ones are not "received" (the rest of marks: decrypted)
            locked = {i for i, f in marks.items() if f.ciphertext} if marks else None
            # states that overtook their message (never onto one still undecryptable)
            applied = apply_pending(
                conn, [m for m in fresh if m.id not in locked] if locked else fresh
            )
            position = cursor_id or last_id
            if cursor is not None and position is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO cursors VALUES (?, ?, ?, ?)",
                    (cursor[0], cursor[1], position, now),
                )
            if rejected:
                _insert_rejected(conn, rejected)
            if receipt_destination is not None and fresh:
                self._queue_receipts(
                    conn, [(m.id, "delivered", now) for m in fresh], receipt_destination, device,
                    name=device_name, sealed=marks,
                )  # fmt: skip
            if forward is not None:
                _queue_forward(conn, fresh, forward, now)
        if locked or applied:
            return [
                Stored(first + i, m, applied.get(m.id) or _state(m, marks), source)
                for i, m in enumerate(fresh)
            ]
        return [Stored(first + i, m, "received", source) for i, m in enumerate(fresh)]

    def record_receipts(
        self,
        groups: Sequence[tuple[str, str, Sequence[tuple[str, str, float]]]],
        synced: Sequence[StateEvent],
        *,
        owner: str,
        max_devices: int | None = None,
    ) -> tuple[int, list[StateEvent]]:
        """The relay's ``POST /v1/receipts`` in ONE transaction: each ``(device, device_name,
        events)`` group's receipts (``record_states``), then the owner's synced states
        (``sync_states``). Returns how many receipts named a stored message, and the synced
        states that moved forward (for the owner's streams)."""
        with self._write():
            accepted = sum(
                self.record_states(ev, device=d, owner=owner, max_devices=max_devices,
                                   device_name=name)
                for d, name, ev in groups
            )  # fmt: skip
            return accepted, self.sync_states(synced, owner=owner)

    def get(self, message_id: str) -> Stored | None:
        rows = self._read(f"{_SELECT} WHERE id = ?", (message_id,))
        return _stored(rows[0]) if rows else None

    def count(self) -> int:
        return int(self._read("SELECT count(*) FROM messages")[0][0])

    def last_message(self) -> Stored | None:
        rows = self._read(f"{_SELECT} ORDER BY seq DESC LIMIT 1")
        return _stored(rows[0]) if rows else None

    def seq_of(self, message_id: str) -> int | None:
        rows = self._read("SELECT seq FROM messages WHERE id = ?", (message_id,))
        return int(rows[0][0]) if rows else None

    def query(
        self,
        *,
        topics: Iterable[str] | None = None,
        since: Since | None = None,
        after_seq: int | None = None,
        search: str | None = None,
        min_priority: int | None = None,
        limit: int | None = None,
        newest: bool = True,
    ) -> list[Stored]:
        """Stored messages, oldest first. ``newest`` with ``limit`` keeps the newest N.

        ``topics`` are exact topic names (the relay) or MQTT filters ending in ``#``.
        ``since`` follows ntfy: ``id`` means after that message (an unknown id means all),
        ``time`` means at or after that unix time, ``latest`` means only the newest one.
        """
        rows = self.query_rows(topics=topics, since=since, after_seq=after_seq, search=search,
                               min_priority=min_priority, limit=limit, newest=newest)  # fmt: skip
        return [_stored(r) for r in rows]

    def query_rows(
        self,
        *,
        topics: Iterable[str] | None = None,
        since: Since | None = None,
        after_seq: int | None = None,
        search: str | None = None,
        min_priority: int | None = None,
        limit: int | None = None,
        newest: bool = True,
    ) -> list[Row]:
        """``query``'s rows, not decoded: ``row[0]`` is the seq, two equal rows are the same
        message in the same state, and ``Store.decode`` makes one a ``Stored``. For a caller
        that keeps what it built from a row (the relay's replay cache, ``edge_relay.replay``):
        it decodes only the rows it has not seen."""
        clauses, params = self._filters(topics, since, after_seq, min_priority)
        if since is not None and since.kind == "latest":
            limit, newest = 1, True
        order = "DESC" if newest else "ASC"
        if search:
            clauses.insert(0, "messages_fts MATCH ?")
            params.insert(0, _fts_query(search))
            base, key = _SEARCH, "messages_fts.rowid"
        else:
            base, key = _SELECT, "seq"
        where = "WHERE " + " AND ".join(clauses) if clauses else ""
        sql = f"{base} {where} ORDER BY {key} {order}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self._read(sql, params)
        return rows[::-1] if newest else rows

    @staticmethod
    def decode(row: Row) -> Stored:
        """A row of ``query_rows`` as the ``Stored`` that ``query`` returns for it."""
        return _stored(row)

    def _filters(
        self,
        topics: Iterable[str] | None,
        since: Since | None,
        after_seq: int | None,
        min_priority: int | None,
    ) -> tuple[list[str], list[Any]]:
        """WHERE clauses (on unqualified ``messages`` columns) and their parameters."""
        clauses: list[str] = []
        params: list[Any] = []
        if topics is not None:
            parts = []
            for t in topics:
                if t.endswith("/#"):
                    # MQTT: "home/#" matches "home" itself as well as everything below it.
                    parts.append("(substr(topic, 1, ?) = ? OR topic = ?)")
                    params += [len(t) - 1, t[:-1], t[:-2]]
                elif t.endswith("#") or t.endswith("*"):
                    parts.append("substr(topic, 1, ?) = ?")
                    params += [len(t) - 1, t[:-1]]
                else:
                    parts.append("topic = ?")
                    params.append(t)
            clauses.append("(" + " OR ".join(parts or ["0"]) + ")")
        if since is not None and since.kind == "id" and since.id is not None:
            seq = self.seq_of(since.id)
            if seq is not None:
                after_seq = max(after_seq or 0, seq)
        if since is not None and since.kind == "time" and since.time is not None:
            clauses.append("time >= ?")
            params.append(since.time)
        if after_seq is not None:
            clauses.append("seq > ?")
            params.append(after_seq)
        if min_priority is not None:
            clauses.append("priority >= ?")
            params.append(min_priority)
        return clauses, params

    def count_by_state(self) -> dict[str, int]:
        """How many stored messages are in each state (the tray's unread count)."""
        rows = self._read("SELECT state, count(*) FROM messages GROUP BY state")
        return {str(state): int(n) for state, n in rows}

    # --- cursors and meta -------------------------------------------------------------------

    def get_cursor(self, source: str, subscription: str) -> str | None:
        rows = self._read(
            "SELECT last_id FROM cursors WHERE source = ? AND subscription = ?",
            (source, subscription),
        )
        return str(rows[0][0]) if rows else None

    def latest_cursor(self, source: str) -> str | None:
        """The most recently saved position of ``source`` for any subscription.

        A WebSocket agent whose topic list changed resumes from here rather than from "now",
        so messages for the topics it kept are not skipped (the new topics replay a little
        history instead, which the UNIQUE id makes harmless).
        """
        rows = self._read(
            "SELECT last_id FROM cursors WHERE source = ? ORDER BY updated DESC LIMIT 1",
            (source,),
        )
        return str(rows[0][0]) if rows else None

    def sequence(self, topic: str, sequence_id: str) -> tuple[str | None, str] | None:
        """``(last message id, state)`` of a notification sequence (agent.store.sequences)."""
        rows = self._read(
            "SELECT message_id, state FROM sequences WHERE topic = ? AND sequence_id = ?",
            (topic, sequence_id),
        )
        return (rows[0][0], str(rows[0][1])) if rows else None

    def current(self, items: Sequence[Stored]) -> list[Stored]:
        """The items that should still reach the notifier: messages superseded by a later
        one of their sequence, or of a cleared or deleted sequence, are left out (the rows
        stay; see agent.store.sequences.current)."""
        keys = [(s.message.topic, sid) for s in items if (sid := sequences.sequence_id(s.message))]
        if not keys:
            return list(items)
        rows: dict[tuple[str, str], tuple[Any, ...]] = {}
        for topic, sid in set(keys):
            row = self.sequence(topic, sid)
            if row is not None:
                rows[(topic, sid)] = row
        return [
            s
            for s in items
            if sequences.current(
                s.message, rows.get((s.message.topic, sequences.sequence_id(s.message) or ""))
            )
        ]

    def pending_notifications(self, limit: int = 1000) -> list[Stored]:
        """Stored messages not yet handed to the notifier, oldest first."""
        return self.query(after_seq=self.notified_seq(), limit=limit, newest=False)


def _state(m: Message, marks: Mapping[str, sealed.Sealed]) -> str:
    mark = marks.get(m.id)
    return sealed.UNDECRYPTABLE if mark is not None and mark.ciphertext else "received"
