"""The store's row codecs: the columns, and the conversions between Messages and rows (the
tables themselves are ``agent.store.migrations``). Part of ``agent.store``, the one package that
touches SQLite."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass, replace
from json.encoder import encode_basestring
from typing import Any, TypeVar

from agent.envelope import Message, dumps, encode
from agent.states import RANK
from agent.store import retained

# A message's state only moves forward: a late "displayed" never hides a "clicked"
# (agent.states has the one rank table).
_RANK = RANK
_COLUMNS = (
    "id", "time", "expires", "topic", "title", "message", "priority", "tags", "click",
    "actions", "attachment", "content_type", "extra", "source", "received",
)  # fmt: skip
_INSERT = (
    f"INSERT OR IGNORE INTO messages ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
)
_SEALED_COLUMNS = (*_COLUMNS, "e2e", "ciphertext", "state")
_INSERT_SEALED = (
    f"INSERT OR IGNORE INTO messages ({', '.join(_SEALED_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _SEALED_COLUMNS)})"
)
_SELECT = f"SELECT seq, state, {', '.join(_COLUMNS)} FROM messages"
# A search walks the FTS index in rowid (= seq) order and stops at LIMIT: measured 0.1 ms
# against 16 ms for "seq IN (SELECT rowid ... MATCH)" on 100k matching rows, which builds the
# whole match list first (bench/store_ingest.py cache; docs/PERFORMANCE.md).
_SEARCH = (
    f"SELECT m.seq, m.state, {', '.join('m.' + c for c in _COLUMNS)} FROM messages_fts "
    "JOIN messages AS m ON m.seq = messages_fts.rowid"
)
_MAX_VARS = 500
"""Host parameters in one ``IN (...)`` query at most: below SQLite's limit (999 before 3.32)."""
_T = TypeVar("_T")


def chunks(values: list[_T]) -> Iterator[list[_T]]:
    """``values`` in order, in slices of at most ``_MAX_VARS``: one ``IN (...)`` query each."""
    for i in range(0, len(values), _MAX_VARS):
        yield values[i : i + _MAX_VARS]


def placeholders(values: Sized) -> str:
    """One SQL host parameter per item of ``values``, for an ``IN (...)`` list: ``?,?,?``."""
    return ",".join("?" * len(values))


Row = tuple[Any, ...]
"""A ``messages`` row as ``_SELECT`` reads it: seq, state, then ``_COLUMNS``."""


@dataclass(frozen=True, slots=True)
class Stored:
    """A message as stored: its receive order and its current state."""

    seq: int
    message: Message
    state: str = "received"
    source: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """Something waiting to go upstream: a receipt or a message published while offline."""

    seq: int
    kind: str
    destination: str
    payload: str
    attempts: int


@dataclass(frozen=True, slots=True)
class Redelivery:
    """Where an id-less MQTT message came from: enough to recognise the broker resending it.

    ``packet_id`` is the MQTT packet identifier it arrived with (None: the broker's packet ids
    prove nothing, ``mqtt_redelivery``), ``digest`` a hash of its topic and payload bytes,
    ``dup`` the PUBLISH's DUP flag (set when the broker resends). ``topic`` is the MQTT topic,
    ``session`` the token of the broker session it came in (None: unknown), ``retained`` set
    for a QoS 1 PUBLISH with RETAIN: a copy sent because of a SUBSCRIBE (``agent.store.retained``).
    See ``Store.insert_batch`` for how they are used.
    """

    packet_id: int | None
    digest: bytes
    dup: bool
    topic: str = ""
    session: str | None = None
    retained: bool = False


REJECTED_PAYLOAD = 4096
"""Bytes of a rejected payload kept: enough to see what it was, never a disk to fill."""
REJECTED_KEEP = 1000
"""Rejected rows kept (newest); older ones go at the insert that passes the bound."""
REJECTED_MAX_AGE = 30 * 86400
"""Seconds a rejected row is kept at most (pruned with the messages)."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """A payload that could not be stored as an envelope, kept raw so it is not lost unseen.

    ``payload`` is its first REJECTED_PAYLOAD bytes, ``size`` its whole length; ``topic`` is
    None when the transport could not read one (an MQTT topic that is not UTF-8).
    """

    time: float
    source: str
    topic: str | None
    reason: str
    payload: bytes
    size: int

    @classmethod
    def of(
        cls, source: str, topic: str | None, reason: str, payload: bytes | str, now: float
    ) -> Rejected:
        """The record for ``payload`` (text is kept as its UTF-8 bytes, surrogates escaped)."""
        raw = payload if isinstance(payload, bytes) else payload.encode("utf-8", "backslashreplace")
        return cls(now, source, topic, reason[:500], raw[:REJECTED_PAYLOAD], len(raw))


def _insert_rejected(conn: sqlite3.Connection, items: Sequence[Rejected]) -> None:
    """Add rejected rows (inside the caller's transaction) and keep the newest REJECTED_KEEP."""
    conn.executemany(
        "INSERT INTO rejected (time, source, topic, reason, payload, size) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [(r.time, r.source, r.topic, r.reason, r.payload, r.size) for r in items],
    )
    conn.execute(
        "DELETE FROM rejected WHERE seq <= "
        "(SELECT seq FROM rejected ORDER BY seq DESC LIMIT 1 OFFSET ?)",
        (REJECTED_KEEP,),
    )


def _row(m: Message, source: str | None, now: float) -> tuple[Any, ...]:
    return (
        m.id, m.time, m.expires, m.topic, m.title, m.message, m.priority,
        _json_strings(m.tags) if m.tags else None,
        m.click,
        dumps(list(m.actions)) if m.actions else None,
        dumps(m.attachment) if m.attachment is not None else None,
        m.content_type,
        dumps(m.extra) if m.extra else None,
        source,
        now,
    )  # fmt: skip


_CLEAR_TAIL = (None, None, "received")
_OPENED_TAIL = ("jwe", None, "received")


def _sealed_tails(sealed: Mapping[str, str | None]) -> dict[str, tuple[Any, ...]]:
    """Per encrypted id, its row's (e2e, ciphertext, state); decrypted ones share one tuple
    (a function call and a tuple per row cost ~2 us a message in a drain)."""
    return {
        i: _OPENED_TAIL if token is None else ("jwe", token, "undecryptable")
        for i, token in sealed.items()
    }


def _insert_new(
    conn: sqlite3.Connection,
    fresh: Sequence[Message],
    source: str | None,
    now: float,
    sealed: Mapping[str, str | None] | None = None,
) -> int:
    """Insert messages known to be new and index them for search, in the caller's
    transaction (one INSERT ... SELECT for the whole batch); returns the first one's seq.

    ``sealed`` (agent.store.sealed): id -> JWE or None for those that arrived encrypted,
    written in the same INSERT (an UPDATE per row afterwards cost ~25 us a message)."""
    if not fresh:
        return 1
    before = _last_seq(conn)
    if sealed:
        tails = _sealed_tails(sealed)
        conn.executemany(
            _INSERT_SEALED,
            [_row(m, source, now) + tails.get(m.id, _CLEAR_TAIL) for m in fresh],
        )
    else:
        conn.executemany(_INSERT, [_row(m, source, now) for m in fresh])
    conn.execute(
        "INSERT INTO messages_fts (rowid, title, message, tags) "
        "SELECT seq, title, message, tags FROM messages WHERE seq > ?",
        (before,),
    )
    return _last_seq(conn) - len(fresh) + 1


def _queue_forward(
    conn: sqlite3.Connection,
    fresh: Sequence[Message],
    forward: Callable[[Message], str | None],
    now: float,
) -> None:
    """Queue each message that ``forward`` names a destination for in the outbox (kind
    ``message``), in the caller's transaction: the relay's upstream forwarding."""
    rows = [(dest, m) for m in fresh if (dest := forward(m)) is not None]
    conn.executemany(
        "INSERT INTO outbox (kind, destination, payload, created) VALUES (?, ?, ?, ?)",
        [("message", dest, dumps(encode(m)), now) for dest, m in rows],
    )


def _json_strings(items: tuple[str, ...]) -> str:
    """``dumps(list(items))`` for a tuple of strings, byte for byte, without building a JSON
    encoder per call: ~0.3 µs against ~4 µs, and every tagged message pays it on ingest."""
    return "[" + ",".join(map(encode_basestring, items)) + "]"


def _redelivered(
    conn: sqlite3.Connection,
    messages: Sequence[Message],
    source: str,
    keys: Mapping[str, Redelivery],
) -> list[Message]:
    """``messages`` with each DUP resend of a recorded id-less message given its stored id,
    and each retained copy of the last one stored on its topic that message's id (``retained``);
    records every keyed message's final id under its packet id and its topic (``insert_batch``)."""
    dups = [
        k.packet_id
        for m in messages
        if (k := keys.get(m.id)) is not None and k.dup and k.packet_id is not None
    ]
    last = retained.lookup(conn, source, [k for m in messages if (k := keys.get(m.id))])
    changed: set[str] = set()
    seen: dict[int, tuple[bytes, str]] = {}
    for chunk in chunks(dups):
        rows = conn.execute(
            "SELECT packet_id, digest, id FROM mqtt_redelivery WHERE source = ? AND "
            f"packet_id IN ({placeholders(chunk)})",
            [source, *chunk],
        )
        seen.update((int(p), (bytes(d), str(mid))) for p, d, mid in rows)
    out: list[Message] = []
    records = []
    for m in messages:
        key = keys.get(m.id)
        if key is not None and key.packet_id is not None:
            old = seen.get(key.packet_id) if key.dup else None
            if old is not None and old[0] == key.digest:
                m = replace(m, id=old[1])
            records.append((source, key.packet_id, key.digest, m.id))
            # A resend in this same batch (the broker's retry interval ran out before the
            # commit; both copies read in one burst) finds its first copy here.
            seen[key.packet_id] = (key.digest, m.id)
        if key is not None and key.session is not None:
            m = retained.match(m, key, last)
            changed.add(key.topic)
        out.append(m)
    if records:
        conn.executemany("INSERT OR REPLACE INTO mqtt_redelivery VALUES (?, ?, ?, ?)", records)
    retained.record(conn, source, last, changed)
    return out


def _stored(row: Sequence[Any]) -> Stored:
    seq, state, mid, t, expires, topic, title, text, prio, tags, click, actions = row[:12]
    attachment, content_type, extra, source, _received = row[12:]
    msg = Message(
        id=mid, time=t, expires=expires, topic=topic, title=title, message=text, priority=prio,
        tags=tuple(json.loads(tags)) if tags else (),
        click=click,
        actions=tuple(json.loads(actions)) if actions else (),
        attachment=json.loads(attachment) if attachment else None,
        content_type=content_type,
        extra=json.loads(extra) if extra else {},
    )  # fmt: skip
    return Stored(int(seq), msg, str(state), source)


def _last_seq(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
    return int(row[0]) if row else 0


def _fts_query(text: str) -> str:
    """User text as an FTS5 query of quoted terms: no FTS syntax, no syntax errors."""
    terms = [t.replace('"', '""') for t in text.split() if t]
    return " ".join(f'"{t}"' for t in terms) or '""'


def _corrupt(text: str) -> bool:
    return "not a database" in text or "malformed" in text


def _passing(text: str) -> bool:
    """A failure that goes away by itself (another writer, a full disk): retry, don't stop.

    "database disk image is malformed" mentions the disk too, but it is corruption.
    """
    if _corrupt(text):
        return False
    return "locked" in text or "busy" in text or "disk is full" in text or "disk I/O" in text


def _explain(exc: sqlite3.Error) -> str:
    text = str(exc)
    if _corrupt(text):
        return f"the database is corrupt ({text}); move it aside to start a fresh one"
    if "readonly" in text or "read-only" in text:
        return f"the database is read-only ({text}); check the file's permissions"
    if "unable to open" in text:
        return f"{text}; check that the file and its folder exist and are writable"
    return text
