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
from collections.abc import Mapping, Sequence

from agent.envelope import Message, encode_bytes
from agent.store.base import _Base
from agent.store.schema import _MAX_VARS, _SELECT, Rejected, Stored, _row, _stored

UNDECRYPTABLE = "undecryptable"
_UPDATE = (
    "UPDATE messages SET title = ?, message = ?, priority = ?, tags = ?, click = ?, "
    "actions = ?, attachment = ?, content_type = ?, extra = ?, state = 'received', "
    "ciphertext = NULL WHERE id = ? AND state = 'undecryptable'"
)


def mismatched(
    conn: sqlite3.Connection,
    messages: Sequence[Message],
    known: set[str],
    encrypted: Mapping[str, str | None],
    source: str | None,
    now: float,
) -> list[Rejected]:
    """Rejected records for messages whose id is stored with the other encryption status
    (in clear vs encrypted): never merged into the stored one (see the module docstring)."""
    dups = [m for m in messages if m.id in known]
    if not dups:
        return []
    sealed: set[str] = set()
    for i in range(0, len(dups), _MAX_VARS):
        chunk = [m.id for m in dups[i : i + _MAX_VARS]]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT id FROM messages WHERE e2e IS NOT NULL AND id IN ({marks})", chunk
        )
        sealed.update(r[0] for r in rows)
    out = []
    for m in dups:
        came = m.id in encrypted
        if came != (m.id in sealed):
            why = (
                f"id {m.id} arrived {'encrypted' if came else 'in clear'} but is stored "
                f"{'encrypted' if not came else 'in clear'}: not merged"
            )
            out.append(Rejected.of(source or "", m.topic, why, encode_bytes(m), now))
    return out


def mark(
    conn: sqlite3.Connection, fresh: Sequence[Message], encrypted: Mapping[str, str | None]
) -> None:
    """Mark the new rows that arrived encrypted (in the caller's transaction)."""
    rows = [(c, c, m.id) for m in fresh if m.id in encrypted for c in (encrypted[m.id],)]
    conn.executemany(
        "UPDATE messages SET e2e = 'jwe', ciphertext = ?, "
        "state = CASE WHEN ? IS NULL THEN state ELSE 'undecryptable' END WHERE id = ?",
        rows,
    )


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
