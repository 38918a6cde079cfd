"""Synced read state in the store: each owner's highest state per message (the relay), the
states other devices reported (the agent), and those waiting for their message. Part of
``agent.store``; the order is ``agent.states``.

Every method takes a whole batch in ONE transaction: a burst of 10,000 state events costs a
few transactions (one per stream batch or POST), never one per event. Each reads the current
states of the batch's ids first, decides in Python with ``agent.states`` which events move
something forward, and writes only those; a duplicate or late state writes nothing.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence

from agent.envelope import Message
from agent.states import RANK, SYNCED, StateEvent, advances, winners
from agent.store.base import _Base
from agent.store.schema import _SELECT, Stored, _stored, chunks, placeholders

PENDING_KEEP = 10_000
"""States kept for messages not received yet (oldest dropped first): a flood of states for
invented ids on an MQTT state topic must not grow the agent's database without end."""
_UPSERT = (
    "INSERT OR REPLACE INTO message_states (message_id, owner, topic, state, device, "
    "device_name, time, changed) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


class _SyncState(_Base):
    # --- the relay: per owner ---------------------------------------------------------------

    def sync_states(self, events: Sequence[StateEvent], *, owner: str) -> list[StateEvent]:
        """Keep ``owner``'s highest synced state per message; return the events that moved one
        forward (what the owner's other devices must hear), one per message.

        The caller has checked that ``owner`` may read each message's topic and set ``topic``
        from the stored message."""
        best = winners(e for e in events if e.state in SYNCED)
        if not best:
            return []
        now = time.time()
        with self._write() as conn:
            current = _owner_states(conn, list(best), owner)
            moved = [e for e in best.values() if advances(current.get(e.id, "received"), e.state)]
            conn.executemany(_UPSERT, [_row(e, owner, now) for e in moved])
        return moved

    def states_since(
        self, owner: str, topics: Iterable[str], after: float, limit: int = 100_000
    ) -> list[StateEvent]:
        """``owner``'s synced states on ``topics`` that changed at or after ``after`` (the
        relay's clock), oldest change first: what a stream resuming with ``since=`` missed."""
        names = sorted(set(topics))
        if not names:
            return []
        rows = self._read(
            "SELECT message_id, state, device, time, topic, device_name FROM message_states "
            f"WHERE owner = ? AND changed >= ? AND topic IN ({placeholders(names)}) "
            "ORDER BY changed LIMIT ?",
            [owner, after, *names, limit],
        )
        return [StateEvent(str(i), str(s), str(d), float(t), str(tp), str(n))
                for i, s, d, t, tp, n in rows]  # fmt: skip

    def topics_of(self, ids: Sequence[str]) -> dict[str, str]:
        """id -> topic of the stored messages among ``ids`` (one read for a whole POST)."""
        out: dict[str, str] = {}
        for chunk in chunks(list(ids)):
            sql = f"SELECT id, topic FROM messages WHERE id IN ({placeholders(chunk)})"
            rows = self._read(sql, chunk)
            out.update((str(i), str(t)) for i, t in rows)
        return out

    def received_at(self, message_id: str) -> float | None:
        """When this store received a message (its clock), or None if unknown."""
        rows = self._read("SELECT received FROM messages WHERE id = ?", (message_id,))
        return float(rows[0][0]) if rows else None

    def state_of(self, message_id: str, owner: str = "") -> StateEvent | None:
        """The highest synced state recorded for a message (and who reported it)."""
        rows = self._read(
            "SELECT message_id, state, device, time, topic, device_name FROM message_states "
            "WHERE message_id = ? AND owner = ?",
            (message_id, owner),
        )
        if not rows:
            return None
        i, s, d, t, tp, n = rows[0]
        return StateEvent(str(i), str(s), str(d), float(t), str(tp), str(n))

    # --- the agent: states from the user's other devices ------------------------------------

    def apply_remote_states(
        self, events: Sequence[StateEvent], *, own_device: str = ""
    ) -> list[Stored]:
        """Apply synced states other devices reported, in one transaction; return the stored
        messages whose state moved forward (to close on screen), with their new state.

        No receipt is queued: a state heard from another device is never sent back upstream
        as this device's own (no ping-pong). One for a message not received yet is kept in
        ``pending_states`` and applied by ``insert_batch`` when it arrives. An event whose
        topic is not the message's is ignored (a state topic names the message's topic).

        This device's own states, heard back (the relay sends a state to every stream of its
        owner, an MQTT agent subscribes to the state topic it publishes to), change nothing
        but are returned too when the message is in that state here: ``pushagent read`` (a
        separate process) recorded it, and this is how the daemon learns to take it off its
        own screen. Closing a notification the user already clicked away is a no-op."""
        own = {e.id for e in events if e.state in SYNCED and own_device and e.device == own_device}
        best = winners(e for e in events if e.state in SYNCED and e.device != own_device)
        if not best:
            return self._own_handled(own) if own else []
        now = time.time()
        with self._write() as conn:
            known = _message_states(conn, list(best))
            seen = _owner_states(conn, list(best), "")
            moved: list[StateEvent] = []
            pending: list[StateEvent] = []
            for ev in best.values():
                where = known.get(ev.id)
                if where is None:
                    pending.append(ev)
                    continue
                topic, state = where
                if ev.topic and ev.topic != topic:
                    continue
                if advances(seen.get(ev.id, "received"), ev.state):
                    conn.execute(_UPSERT, _row(ev, "", now, topic))
                if advances(state, ev.state):
                    moved.append(ev)
            conn.executemany(
                "UPDATE messages SET state = ? WHERE id = ?", [(e.state, e.id) for e in moved]
            )
            if pending:
                _keep_pending(conn, pending, now)
            ids = [e.id for e in moved] + sorted(own - {e.id for e in moved})
            if not ids:
                return []
            return [m for m in _stored_by_id(conn, ids) if m.state in SYNCED]

    def _own_handled(self, ids: set[str]) -> list[Stored]:
        """The messages of ``ids`` in a synced state here: a read, no write transaction
        (every click on this device is heard back once)."""
        out: list[Stored] = []
        for chunk in chunks(sorted(ids)):
            rows = self._read(f"{_SELECT} WHERE id IN ({placeholders(chunk)})", chunk)
            out.extend(m for m in map(_stored, rows) if m.state in SYNCED)
        return sorted(out, key=lambda m: m.seq)


def apply_pending(conn: sqlite3.Connection, fresh: Sequence[Message]) -> dict[str, str]:
    """In ``insert_batch``'s transaction: the states that arrived before these new messages,
    applied to them (and moved to ``message_states``). Returns id -> new state.

    One ``LIMIT 1`` probe when nothing is pending (the common case on every ingest)."""
    if not fresh:
        return {}
    try:
        if conn.execute("SELECT 1 FROM pending_states LIMIT 1").fetchone() is None:
            return {}
    except sqlite3.OperationalError:  # a store opened with migrations before 011 (tests)
        return {}
    by_id = {m.id: m for m in fresh}
    applied: dict[str, str] = {}
    ids = list(by_id)
    now = time.time()
    for chunk in chunks(ids):
        rows = conn.execute(
            "SELECT message_id, state, device, time, topic, device_name FROM pending_states "
            f"WHERE message_id IN ({placeholders(chunk)})",
            chunk,
        ).fetchall()
        for mid, state, device, at, topic, name in rows:
            m = by_id[str(mid)]
            if topic and topic != m.topic:
                continue  # a state for this id on another topic: not this message's
            ev = StateEvent(str(mid), str(state), str(device), float(at), m.topic, str(name))
            conn.execute(_UPSERT, _row(ev, "", now))
            applied[ev.id] = ev.state
        conn.executemany("DELETE FROM pending_states WHERE message_id = ?", [(r[0],) for r in rows])
    conn.executemany(
        "UPDATE messages SET state = ? WHERE id = ?", [(s, i) for i, s in applied.items()]
    )
    return applied


def prune_states(conn: sqlite3.Connection, pending_before: float) -> None:
    """Retention (in ``prune``'s transaction): states of messages no longer stored, and
    pending ones older than the messages kept."""
    conn.execute("DELETE FROM message_states WHERE message_id NOT IN (SELECT id FROM messages)")
    conn.execute("DELETE FROM pending_states WHERE received < ?", (pending_before,))


def _row(
    ev: StateEvent, owner: str, now: float, topic: str | None = None
) -> tuple[str, str, str, str, str, str, float, float]:
    return (ev.id, owner, topic or ev.topic, ev.state, ev.device, ev.device_name, ev.time, now)


def _owner_states(conn: sqlite3.Connection, ids: list[str], owner: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for chunk in chunks(ids):
        rows = conn.execute(
            "SELECT message_id, state FROM message_states WHERE owner = ? AND "
            f"message_id IN ({placeholders(chunk)})",
            [owner, *chunk],
        )
        out.update((str(i), str(s)) for i, s in rows)
    return out


def _message_states(conn: sqlite3.Connection, ids: list[str]) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for chunk in chunks(ids):
        rows = conn.execute(
            f"SELECT id, topic, state FROM messages WHERE id IN ({placeholders(chunk)})",
            chunk,
        )
        out.update((str(i), (str(t), str(s))) for i, t, s in rows)
    return out


def _keep_pending(conn: sqlite3.Connection, events: list[StateEvent], now: float) -> None:
    old: dict[str, str] = {}
    for chunk in chunks([e.id for e in events]):
        rows = conn.execute(
            "SELECT message_id, state FROM pending_states WHERE "
            f"message_id IN ({placeholders(chunk)})",
            chunk,
        )
        old.update((str(i), str(s)) for i, s in rows)
    rows_in = [
        (e.id, e.topic, e.state, e.device, e.device_name, e.time, now)
        for e in events
        if RANK[e.state] > RANK.get(old.get(e.id, "received"), 0)
    ]
    conn.executemany("INSERT OR REPLACE INTO pending_states VALUES (?, ?, ?, ?, ?, ?, ?)", rows_in)
    conn.execute(
        "DELETE FROM pending_states WHERE message_id NOT IN (SELECT message_id FROM "
        "pending_states ORDER BY received DESC LIMIT ?)",
        (PENDING_KEEP,),
    )


def _stored_by_id(conn: sqlite3.Connection, ids: list[str]) -> list[Stored]:
    out: list[Stored] = []
    for chunk in chunks(ids):
        rows = conn.execute(f"{_SELECT} WHERE id IN ({placeholders(chunk)})", chunk)
        out.extend(_stored(r) for r in rows)
    return sorted(out, key=lambda s: s.seq)
