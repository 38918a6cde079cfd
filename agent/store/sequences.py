"""Notification sequences (ntfy 2.16's ``sequence_id``): what each one shows now.

Messages with the same ``(topic, sequence_id)`` are one notification that is updated in place;
a ``message_clear`` closes it (ntfy: "mark as read and dismiss"), a ``message_delete`` removes
it. The ``sequences`` table (migration 008) keeps, per sequence, the last message shown and
its state: ``shown`` (first message, or the first after a clear), ``updated`` (a later
message replaced it), ``cleared``, ``deleted``. It is written in ``insert_batch``'s own
transaction, so the state is as exactly-once as the messages that make it.

A sequence's key is its ``sequence_id``; a message without one is its own sequence under its
``id`` (ntfy lets a publisher clear or update a message by the id it was answered with).

Nothing is dropped: a clear marks the sequence's messages ``read``, a delete marks them
``deleted`` (a state above every other, so a late ``displayed`` never revives one); the rows
stay, and ``history`` shows them with that state.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from agent.envelope import Message
from agent.states import rank, rank_sql

CLEAR, DELETE = "message_clear", "message_delete"
SEQUENCE_STATES = ("shown", "updated", "cleared", "deleted")
_CLOSED = ("cleared", "deleted")
# The messages-table state a clear / delete moves the sequence's messages to, and its rank
# (agent.states.RANK; "deleted" is above every reported state). A clear does not wait for an
# undecryptable message's key: it is closed like any other.
_MARK = {CLEAR: ("read", rank("read")), DELETE: ("deleted", rank("deleted"))}
_RANK_SQL = rank_sql(skip=("undecryptable",))


def event_of(msg: Message) -> str:
    """``message``, ``message_clear`` or ``message_delete`` (``extra["event"]``)."""
    event = msg.extra.get("event") if msg.extra else None
    return event if event in (CLEAR, DELETE) else "message"


def sequence_id(msg: Message) -> str | None:
    """The explicit ``sequence_id`` of a message, if it has a usable one."""
    sid = msg.extra.get("sequence_id") if msg.extra else None
    return sid if isinstance(sid, str) and sid else None


def sequence_key(msg: Message) -> str:
    """The sequence a message belongs to: its ``sequence_id``, else its own id."""
    return sequence_id(msg) or msg.id


def record(conn: sqlite3.Connection, fresh: Sequence[Message], now: float) -> None:
    """Apply the newly stored messages to the ``sequences`` table, oldest first (in the
    caller's transaction). Messages without a ``sequence_id`` cost one dict lookup."""
    for m in fresh:
        event = event_of(m)
        if event == "message":
            sid = sequence_id(m)
            if sid is None:
                continue
            row = _row(conn, m.topic, sid)
            state = "updated" if row is not None and row[1] not in _CLOSED else "shown"
            _upsert(conn, m.topic, sid, m.id, state, now)
            continue
        sid = sequence_key(m)
        row = _row(conn, m.topic, sid)
        last = row[0] if row is not None else _message_id(conn, m.topic, sid)
        _upsert(conn, m.topic, sid, last, "cleared" if event == CLEAR else "deleted", now)
        mark, rank = _MARK[event]
        conn.execute(
            f"UPDATE messages SET state = ? WHERE topic = ? AND {_RANK_SQL} < ? AND "
            "(id = ? OR json_extract(extra, '$.sequence_id') = ?) AND "
            "json_extract(extra, '$.event') IS NULL",
            (mark, m.topic, rank, sid, sid),
        )


def _row(conn: sqlite3.Connection, topic: str, sid: str) -> tuple[Any, ...] | None:
    row = conn.execute(
        "SELECT message_id, state FROM sequences WHERE topic = ? AND sequence_id = ?",
        (topic, sid),
    ).fetchone()
    return tuple(row) if row is not None else None


def _message_id(conn: sqlite3.Connection, topic: str, sid: str) -> str | None:
    row = conn.execute("SELECT id FROM messages WHERE id = ? AND topic = ?", (sid, topic))
    found = row.fetchone()
    return str(found[0]) if found is not None else None


def _upsert(
    conn: sqlite3.Connection, topic: str, sid: str, mid: str | None, state: str, now: float
) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO sequences (topic, sequence_id, message_id, state, updated) "
        "VALUES (?, ?, ?, ?, ?)",
        (topic, sid, mid, state, now),
    )


def current(msg: Message, row: tuple[Any, ...] | None) -> bool:
    """Whether a stored message should still reach the notifier, given its sequence's row
    ``(message_id, state)`` as the store holds it now.

    Clears and deletes always do (closing what is not on screen is a no-op). A message of a
    sequence does only while it is the sequence's latest and the sequence is open: a
    restarted agent handing over a backlog of ``message, update, clear`` shows nothing, and
    one of ``message, update`` shows only the update.
    """
    if event_of(msg) != "message" or sequence_id(msg) is None or row is None:
        return True
    return bool(row[0] == msg.id and row[1] not in _CLOSED)
