"""Messages that arrived end-to-end encrypted (agent.e2e): their mark, the ciphertext of the
ones that could not be opened, and decrypting those in place after a key import. Part of
``agent.store``.

Columns (migration ``009_undecryptable``): ``e2e`` is ``'jwe'`` for a message that arrived
encrypted (NULL: in clear); ``ciphertext`` is its JWE while it is ``undecryptable`` (the row
then holds the stand-in "encrypted message on TOPIC"), NULL once decrypted.

The same id arriving once encrypted and once in clear is two different things, not a
redelivery: the second never updates, replaces or is shown as the first. It is kept in the
``rejected`` table with the reason (nothing is lost unseen), and the stored row is unchanged.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass

from agent.envelope import Message, encode_bytes
from agent.store.base import _Base
from agent.store.schema import _SELECT, Rejected, Stored, _row, _stored, chunks, placeholders

UNDECRYPTABLE = "undecryptable"
_UPDATE = (
    "UPDATE messages SET title = ?, message = ?, priority = ?, tags = ?, click = ?, "
    "actions = ?, attachment = ?, content_type = ?, extra = ?, state = 'received', "
    "ciphertext = NULL WHERE id = ? AND state = 'undecryptable'"
)


@dataclass(frozen=True, slots=True)
class Sealed:
    """How one message of a batch arrived encrypted: ``ciphertext`` is its JWE when it
    could not be decrypted (stored ``undecryptable``), None when it was."""

    ciphertext: str | None = None


OPENED = Sealed()
"""The mark of every message that arrived encrypted and was decrypted (one shared object)."""


def screen(
    conn: sqlite3.Connection,
    messages: Sequence[Message],
    encrypted: Sequence[Sealed | None] | None,
    known: set[str],
    source: str | None,
    now: float,
) -> tuple[Sequence[Message], dict[str, Sealed], list[Rejected]]:
    """The messages that may go on to the usual dedupe, the encrypted ones among them by
    id, and Rejected records for the others: those whose id is stored, or came earlier in
    this batch, with the other encryption status. Never merged: see the module docstring."""
    marks = encrypted if encrypted is not None else [None] * len(messages)
    dups = [m.id for m in messages if m.id in known]
    if not dups and all(f is not None for f in marks):
        # All new, all encrypted (a backlog of one encrypted topic): nothing can be mixed,
        # not even within the batch, so no per-message bookkeeping.
        return (
            messages,
            {m.id: f for m, f in zip(messages, marks, strict=True) if f is not None},
            [],
        )
    status: dict[str, bool] = {i: False for i in dups}
    for chunk in chunks(dups):
        rows = conn.execute(
            f"SELECT id FROM messages WHERE e2e IS NOT NULL AND id IN ({placeholders(chunk)})",
            chunk,
        )
        status.update((r[0], True) for r in rows)
    keep: list[bool] = []
    out: list[Rejected] = []
    for m, mark in zip(messages, marks, strict=True):
        came = mark is not None
        before = status.setdefault(m.id, came)
        keep.append(before == came)
        if before != came:
            why = (
                f"id {m.id} arrived {'encrypted' if came else 'in clear'} but is "
                f"{'encrypted' if before else 'in clear'} in the store or this batch: not merged"
            )
            out.append(Rejected.of(source or "", m.topic, why, encode_bytes(m), now))
    if out:
        messages = [m for m, k in zip(messages, keep, strict=True) if k]
        marks = [f for f, k in zip(marks, keep, strict=True) if k]
    by_id = {m.id: f for m, f in zip(messages, marks, strict=True) if f is not None}
    return messages, by_id, out


class _Sealed(_Base):
    def undecryptable(self, topic: str | None = None) -> list[tuple[Stored, str]]:
        """Stored messages that could not be decrypted, with their JWE, oldest first."""
        sql = _SELECT.replace(" FROM messages", ", ciphertext FROM messages", 1)
        sql += " WHERE state = 'undecryptable'"
        params: list[str] = []
        if topic is not None:
            sql += " AND topic = ?"
            params.append(topic)
        rows = self._read(sql + " ORDER BY seq", params)
        return [(_stored(r[:-1]), str(r[-1])) for r in rows if r[-1] is not None]

    def unread_undecryptable(self) -> set[str]:
        """Ids of undecryptable messages not marked read (or deleted) here: their state stays
        ``undecryptable`` until a key import, so the local ``read`` receipt is what marks
        them (the tray's unread count, ``pushagent read --all``)."""
        rows = self._read(
            "SELECT id FROM messages WHERE state = 'undecryptable' AND NOT EXISTS (SELECT 1 "
            "FROM receipts r WHERE r.message_id = messages.id AND r.owner = '' "
            "AND r.state IN ('read', 'deleted'))"
        )
        return {str(r[0]) for r in rows}

    def decrypted(self, messages: Sequence[Message]) -> int:
        """Replace undecryptable rows by their decrypted ``messages`` (same ids), in place:
        same seq, state back to ``received``, ciphertext dropped, search index updated (the
        FTS update trigger). Returns how many rows changed."""
        if not messages:
            return 0
        now = time.time()
        params = []
        for m in messages:
            r = _row(m, None, now)  # id, time, expires, topic, title, message, prio, ...
            params.append((*r[4:13], m.id))
        with self._write() as conn:
            return int(conn.executemany(_UPDATE, params).rowcount)

    def e2e_of(self, message_id: str) -> tuple[str | None, str | None] | None:
        """``(e2e, ciphertext)`` of a stored message, None when it is not stored."""
        rows = self._read("SELECT e2e, ciphertext FROM messages WHERE id = ?", (message_id,))
        return (rows[0][0], rows[0][1]) if rows else None
