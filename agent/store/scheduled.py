"""Scheduled messages (ntfy's delayed delivery): kept apart until due, then moved into
``messages`` exactly once. Part of ``agent.store``.

A scheduled message is written to the ``scheduled`` table (migration 007) before its publish
is answered, so it survives a SIGKILL. It is not in ``messages``: no replay, poll, search or
``since=`` can show it early. ``release_due`` moves every due row in ONE transaction: the
rows go into ``messages`` (the UNIQUE id skips one already there), their upstream forwards
into the outbox, and they leave ``scheduled`` — all or nothing. So a crash before the commit
leaves them scheduled (released again at the next start: late, once) and a crash after it
leaves them stored (never released twice). The caller fans out what the call returned.

A message's *sequence* (ntfy 2.16) is its ``extra["sequence_id"]``, or its own id when it has
none (ntfy's docs: "use the message ID as the sequence ID"). Scheduling another message of
the same topic and sequence replaces the pending one; ``cancel_scheduled`` drops it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from agent.envelope import Message, dumps, encode, from_fields
from agent.errors import MessageError
from agent.store.base import _Base
from agent.store.schema import (
    Rejected,
    Stored,
    _insert_new,
    _insert_rejected,
    _queue_forward,
    placeholders,
)
from agent.store.sealed import Sealed, screen

RELEASE_MAX = 10_000
"""Rows one ``release_due`` moves at most (a transaction of bounded size; the caller loops)."""


def sequence_of(message: Message) -> str:
    """The sequence a message belongs to: its ``sequence_id``, else its id."""
    sid = message.extra.get("sequence_id")
    return sid if isinstance(sid, str) and sid else message.id


class _Scheduled(_Base):
    def schedule(self, message: Message, *, due: int | None = None) -> bool:
        """Keep ``message`` until ``due`` (default: its ``time``, which ntfy sets to the
        delivery time), durably, replacing a pending one of the same topic and sequence.

        Returns False (and keeps nothing) when its id is already stored or scheduled."""
        at = message.time if due is None else due
        now = time.time()
        seq = sequence_of(message)
        with self._write() as conn:
            if self._existing_ids(conn, [message.id]):
                return False
            conn.execute(
                "DELETE FROM scheduled WHERE topic = ? AND sequence_id = ? AND id != ?",
                (message.topic, seq, message.id),
            )
            cur = conn.execute(
                "INSERT OR IGNORE INTO scheduled (id, topic, due, sequence_id, payload, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (message.id, message.topic, at, seq, dumps(encode(message)), now),
            )
            return cur.rowcount == 1

    def cancel_scheduled(self, topic: str, sequence_id: str) -> int:
        """Drop the pending scheduled messages of ``topic`` whose sequence is ``sequence_id``
        (ntfy 2.16: DELETE ``/<topic>/<sequence_id>`` cancels one not yet delivered); returns
        how many were dropped."""
        with self._write() as conn:
            cur = conn.execute(
                "DELETE FROM scheduled WHERE topic = ? AND sequence_id = ?", (topic, sequence_id)
            )
            return int(cur.rowcount)

    def next_due(self) -> int | None:
        """The earliest due time of a pending scheduled message, or None."""
        rows = self._read("SELECT min(due) FROM scheduled")
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    def scheduled_ids(self) -> set[str]:
        """The ids of every pending scheduled message (the relay keeps their files)."""
        return {str(r[0]) for r in self._read("SELECT id FROM scheduled")}

    def scheduled_count(self) -> int:
        return int(self._read("SELECT count(*) FROM scheduled")[0][0])

    def scheduled_messages(
        self, topics: Iterable[str] | None = None, *, limit: int = 1000
    ) -> list[Message]:
        """Pending scheduled messages (of ``topics``, exact names), soonest first: what a
        subscriber asking ``scheduled=1`` sees."""
        sql, params = "SELECT payload FROM scheduled", list[Any]()
        if topics is not None:
            names = sorted(set(topics))
            sql += f" WHERE topic IN ({placeholders(names)})"
            params += names
        rows = self._read(sql + " ORDER BY due, rowid LIMIT ?", [*params, limit])
        out = []
        for (payload,) in rows:
            msg = _decode(str(payload))
            if msg is not None:
                out.append(msg)
        return out

    def release_due(
        self,
        now: float,
        *,
        source: str = "local",
        forward: Callable[[Message], str | None] | None = None,
        limit: int = RELEASE_MAX,
        sealed: Callable[[Message], bool] | None = None,
        not_merged: list[Rejected] | None = None,
    ) -> list[Stored]:
        """Move every scheduled message due at ``now`` (at most ``limit``) into ``messages``
        in one transaction, queueing upstream forwards in it; returns those that were new,
        in store order, for the caller to fan out. A row that no longer decodes (it cannot
        be one this store wrote) goes to ``rejected`` instead of blocking the others.
        ``sealed(message)`` says which arrived end-to-end encrypted, as ``insert_batch``'s
        ``encrypted=`` does: stored so (``e2e``), so a later copy of the id in the same form
        is a no-op; and one whose id was stored meanwhile in the other form is kept in
        ``rejected`` (also appended to ``not_merged``), never merged (agent.store.sealed)."""
        with self._write() as conn:
            rows = conn.execute(
                "SELECT rowid, topic, payload FROM scheduled WHERE due <= ? "
                "ORDER BY due, rowid LIMIT ?",
                (int(now), limit),
            ).fetchall()
            if not rows:
                return []
            messages: list[Message] = []
            bad: list[Rejected] = []
            for _, topic, payload in rows:
                msg = _decode(str(payload))
                if msg is None:
                    why = "scheduled message no longer decodes"
                    bad.append(Rejected.of(source, str(topic), why, str(payload), now))
                else:
                    messages.append(msg)
            known = self._existing_ids(conn, [m.id for m in messages])
            marks: dict[str, str | None] | None = None
            if sealed is not None:
                came = [Sealed() if sealed(m) else None for m in messages]
                kept, by_id, mixed = screen(conn, messages, came, known, source, now)
                messages, marks = list(kept), {i: f.ciphertext for i, f in by_id.items()}
                bad += mixed
                if not_merged is not None:
                    not_merged.extend(mixed)
            fresh = [m for m in messages if m.id not in known]
            first = _insert_new(conn, fresh, source, time.time(), marks)
            if forward is not None:
                _queue_forward(conn, fresh, forward, now)
            if bad:
                _insert_rejected(conn, bad)
            conn.executemany("DELETE FROM scheduled WHERE rowid = ?", [(r[0],) for r in rows])
        return [Stored(first + i, m, "received", source) for i, m in enumerate(fresh)]


def _decode(payload: str) -> Message | None:
    try:
        obj = json.loads(payload)
        return from_fields(obj) if isinstance(obj, dict) else None
    except (ValueError, MessageError):
        return None
