"""The store's schema and row codecs: the tables (as named, ordered migrations), the columns,
and the conversions between Messages and rows. Part of ``agent.store``, the one package that
touches SQLite."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Any

from agent.envelope import Message, dumps, encode
from agent.states import RANK

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

if TYPE_CHECKING:
    import sqlite_utils


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

    ``packet_id`` is the MQTT packet identifier it arrived with, ``digest`` a hash of its
    topic and payload bytes, ``dup`` the PUBLISH's DUP flag (set when the broker resends).
    See ``Store.insert_batch`` for how they are used.
    """

    packet_id: int
    digest: bytes
    dup: bool


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


# --- migrations: append only; never edit one that has shipped --------------------------------


def _m001_messages(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE messages (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            time INTEGER NOT NULL,
            expires INTEGER,
            topic TEXT NOT NULL,
            title TEXT,
            message TEXT NOT NULL,
            priority INTEGER NOT NULL DEFAULT 3,
            tags TEXT,
            click TEXT,
            actions TEXT,
            attachment TEXT,
            content_type TEXT,
            extra TEXT,
            source TEXT,
            received REAL NOT NULL,
            state TEXT NOT NULL DEFAULT 'received'
        )"""
    )
    db.execute("CREATE INDEX messages_topic_seq ON messages (topic, seq)")
    db.execute("CREATE INDEX messages_time ON messages (time)")
    db.table("messages").enable_fts(["title", "message", "tags"], create_triggers=True)


def _m002_cursors_outbox_receipts(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE cursors (
            source TEXT NOT NULL,
            subscription TEXT NOT NULL,
            last_id TEXT NOT NULL,
            updated REAL NOT NULL,
            PRIMARY KEY (source, subscription)
        )"""
    )
    db.execute(
        """CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            destination TEXT NOT NULL,
            payload TEXT NOT NULL,
            created REAL NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0
        )"""
    )
    db.execute(
        """CREATE TABLE receipts (
            message_id TEXT NOT NULL,
            state TEXT NOT NULL,
            device TEXT NOT NULL DEFAULT '',
            time REAL NOT NULL,
            PRIMARY KEY (message_id, state, device)
        )"""
    )
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


def _m003_fts_per_batch(db: sqlite_utils.Database) -> None:
    # The per-row AFTER INSERT trigger cost ~24 us of a row's ~28 us (bench/mqtt_ingest.py);
    # insert_batch now indexes a whole batch with one INSERT ... SELECT in its transaction.
    db.execute("DROP TRIGGER IF EXISTS messages_ai")


def _m004_mqtt_redelivery(db: sqlite_utils.Database) -> None:
    # The id given to each id-less MQTT message, by the packet id it arrived with: a broker
    # resending it after a crash (DUP set) gets the same id, so the UNIQUE id drops it.
    db.execute(
        """CREATE TABLE mqtt_redelivery (
            source TEXT NOT NULL,
            packet_id INTEGER NOT NULL,
            digest BLOB NOT NULL,
            id TEXT NOT NULL,
            PRIMARY KEY (source, packet_id)
        ) WITHOUT ROWID"""
    )


def _m005_rejected(db: sqlite_utils.Database) -> None:
    # What arrived but could not be stored as an envelope: kept raw (bounded), with why, and
    # acknowledged with its batch, so a hostile payload never blocks the ones behind it.
    db.execute(
        """CREATE TABLE rejected (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            time REAL NOT NULL,
            source TEXT NOT NULL,
            topic TEXT,
            reason TEXT NOT NULL,
            payload BLOB NOT NULL,
            size INTEGER NOT NULL
        )"""
    )


def _m006_receipt_owner(db: sqlite_utils.Database) -> None:
    # Who posted a receipt (the relay: the caller's token name; the agent's own: ''), in the
    # key, so one owner's receipt can neither replace nor suppress another's for the same
    # device name. SQLite cannot change a primary key in place: copy into a new table.
    db.execute(
        """CREATE TABLE receipts_new (
            message_id TEXT NOT NULL,
            owner TEXT NOT NULL DEFAULT '',
            state TEXT NOT NULL,
            device TEXT NOT NULL DEFAULT '',
            time REAL NOT NULL,
            PRIMARY KEY (message_id, owner, state, device)
        )"""
    )
    db.execute(
        "INSERT INTO receipts_new (message_id, owner, state, device, time) "
        "SELECT message_id, '', state, device, time FROM receipts"
    )
    db.execute("DROP TABLE receipts")
    db.execute("ALTER TABLE receipts_new RENAME TO receipts")


def _m007_scheduled(db: sqlite_utils.Database) -> None:
    # Messages published with a delay wait here, outside `messages`, so no replay, poll or
    # search can see them early; at their time they move into `messages` in one transaction
    # (agent/store/scheduled.py). `sequence_id` (ntfy 2.16) lets a newer one replace them.
    db.execute(
        """CREATE TABLE scheduled (
            id TEXT NOT NULL UNIQUE,
            topic TEXT NOT NULL,
            due INTEGER NOT NULL,
            sequence_id TEXT,
            payload TEXT NOT NULL,
            created REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX scheduled_due ON scheduled (due)")
    db.execute("CREATE INDEX scheduled_sequence ON scheduled (topic, sequence_id)")


def _m008_sequence(db: sqlite_utils.Database) -> None:
    # ntfy 2.16's sequence_id: per (topic, sequence_id) the last message shown and its state
    # (shown / updated / cleared / deleted), written with the messages (agent.store.sequences).
    db.execute(
        """CREATE TABLE sequences (
            topic TEXT NOT NULL,
            sequence_id TEXT NOT NULL,
            message_id TEXT,
            state TEXT NOT NULL,
            updated REAL NOT NULL,
            PRIMARY KEY (topic, sequence_id)
        ) WITHOUT ROWID"""
    )


def _m009_undecryptable(db: sqlite_utils.Database) -> None:
    # End-to-end encrypted topics (agent.e2e, agent.store.sealed): which rows arrived
    # encrypted ('jwe'), and the JWE of those that could not be decrypted yet (state
    # 'undecryptable'), kept so that a key imported later decrypts them in place.
    db.execute("ALTER TABLE messages ADD COLUMN e2e TEXT")
    db.execute("ALTER TABLE messages ADD COLUMN ciphertext TEXT")


def _m010_attachment_files(db: sqlite_utils.Database) -> None:
    # The agent's downloaded attachments (agent.attachments): where each message's file is
    # in the cache folder, or why it could not be had (``path`` NULL, ``error`` set; not
    # retried). Kept out of `messages` so eviction or a failure never rewrites a message.
    db.execute(
        """CREATE TABLE attachment_files (
            message_id TEXT PRIMARY KEY,
            path TEXT,
            size INTEGER,
            type TEXT,
            fetched REAL NOT NULL,
            error TEXT
        ) WITHOUT ROWID"""
    )


def _m011_message_states(db: sqlite_utils.Database) -> None:
    # Synced read state (agent.store.syncstate has the details): each owner's highest state
    # per message, ``changed`` by the local clock (what a since= replay asks for); the
    # agent's states for messages it has not received yet; each owner's device names.
    db.execute(
        """CREATE TABLE message_states (message_id TEXT NOT NULL, owner TEXT NOT NULL,
            topic TEXT NOT NULL, state TEXT NOT NULL, device TEXT NOT NULL,
            device_name TEXT NOT NULL, time REAL NOT NULL, changed REAL NOT NULL,
            PRIMARY KEY (message_id, owner)) WITHOUT ROWID"""
    )
    db.execute("CREATE INDEX message_states_changed ON message_states (owner, changed)")
    db.execute(
        """CREATE TABLE pending_states (message_id TEXT PRIMARY KEY, topic TEXT NOT NULL,
            state TEXT NOT NULL, device TEXT NOT NULL, device_name TEXT NOT NULL,
            time REAL NOT NULL, received REAL NOT NULL) WITHOUT ROWID"""
    )
    db.execute(
        """CREATE TABLE devices (owner TEXT NOT NULL, device TEXT NOT NULL,
            name TEXT NOT NULL, seen REAL NOT NULL, PRIMARY KEY (owner, device)) WITHOUT ROWID"""
    )


def _m012_analytics(db: sqlite_utils.Database) -> None:
    # Delivery analytics (agent.store.analytics). The relay's per-topic, per-day funnel walks
    # the messages of one topic within a time window: (topic, time) covers it (the window
    # alone already has messages_time). The agent keeps why the rules held a message back
    # (``held``: muted, low-priority, quiet, paused, burst), written once per batch by the
    # rules layer, so `pushagent stats` can tell "muted by rule" from "never looked at".
    db.execute("CREATE INDEX messages_topic_time ON messages (topic, time)")
    db.execute(
        """CREATE TABLE held (
            message_id TEXT PRIMARY KEY,
            verdict TEXT NOT NULL,
            time REAL NOT NULL
        ) WITHOUT ROWID"""
    )


def _num(expr: str, default: int) -> str:
    """SQL for a JSON number clamped to 1..86400 s, ``default`` when it is not a number (an
    MQTT publisher's envelope may carry anything in its extra fields)."""
    return (f"min(86400, max(1, CASE WHEN typeof({expr}) IN ('integer', 'real') "
            f"THEN {expr} ELSE {default} END))")  # fmt: skip


def _m013_ack(db: sqlite_utils.Database) -> None:
    # Acknowledge-until-acked (agent.realert, docs/NOTIFICATIONS.md). ``realerts``: the
    # agent's re-alert schedule, one row per ack-required message not yet acknowledged or
    # expired. Triggers keep it in the messages' own transactions: a row is made when an
    # ack-required message is inserted (so a SIGKILL right after the commit loses no
    # schedule), removed when the message turns ``acknowledged`` (whatever path set it:
    # a button, ``pushagent ack``, a state synced from another device) or is pruned. Expiry
    # counts from the earlier of the message's time and its arrival, so an agent whose clock
    # is behind the publisher's does not re-alert longer than asked.
    # ``acks``: on the relay, who acknowledged a message first (the first one recorded wins,
    # whatever the devices' clocks say) for ``GET /v1/messages/<id>/ack``.
    # The triggers look for '"ack"' in the extra JSON first (instr): most messages have no
    # extra fields or other ones, and json_valid per row cost 30 % of an ingest with extras
    # (bench/ack_triggers.py).
    db.execute(
        """CREATE TABLE realerts (
            message_id TEXT PRIMARY KEY,
            due REAL NOT NULL,
            retry REAL NOT NULL,
            expires REAL NOT NULL,
            count INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID"""
    )
    db.execute("CREATE INDEX realerts_due ON realerts (due)")
    retry = _num("json_extract(NEW.extra, '$.ack_retry')", 60)
    expire = _num("json_extract(NEW.extra, '$.ack_expire')", 3600)
    db.execute(
        f"""CREATE TRIGGER realerts_new AFTER INSERT ON messages
        WHEN NEW.extra IS NOT NULL AND instr(NEW.extra, '"ack"') > 0 AND json_valid(NEW.extra)
            AND json_extract(NEW.extra, '$.ack') = 'required' AND NEW.state != 'acknowledged'
        BEGIN
            INSERT OR IGNORE INTO realerts (message_id, due, retry, expires)
            VALUES (NEW.id, NEW.received + {retry}, {retry},
                    min(NEW.time, NEW.received) + {expire});
        END"""
    )
    db.execute(
        """CREATE TRIGGER realerts_acked AFTER UPDATE OF state ON messages
        WHEN NEW.state IN ('acknowledged', 'deleted')
        BEGIN DELETE FROM realerts WHERE message_id = NEW.id; END"""
    )
    db.execute(
        """CREATE TRIGGER realerts_gone AFTER DELETE ON messages
        WHEN OLD.extra IS NOT NULL AND instr(OLD.extra, '"ack"') > 0
        BEGIN DELETE FROM realerts WHERE message_id = OLD.id; END"""
    )
    db.execute(
        """CREATE TABLE acks (
            message_id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            device TEXT NOT NULL,
            device_name TEXT NOT NULL,
            time REAL NOT NULL,
            recorded REAL NOT NULL
        ) WITHOUT ROWID"""
    )


MIGRATIONS: tuple[tuple[str, Callable[[sqlite_utils.Database], None]], ...] = (
    ("001_messages", _m001_messages),
    ("002_cursors_outbox_receipts", _m002_cursors_outbox_receipts),
    ("003_fts_per_batch", _m003_fts_per_batch),
    ("004_mqtt_redelivery", _m004_mqtt_redelivery),
    ("005_rejected", _m005_rejected),
    ("006_receipt_owner", _m006_receipt_owner),
    ("007_scheduled", _m007_scheduled),
    ("008_sequence", _m008_sequence),
    ("009_undecryptable", _m009_undecryptable),
    ("010_attachment_files", _m010_attachment_files),
    ("011_message_states", _m011_message_states),
    ("012_analytics", _m012_analytics),
    ("013_ack", _m013_ack),
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


def _sealed_row(
    m: Message, source: str | None, now: float, sealed: Mapping[str, str | None]
) -> tuple[Any, ...]:
    if m.id not in sealed:
        return (*_row(m, source, now), None, None, "received")
    token = sealed[m.id]
    return (*_row(m, source, now), "jwe", token, "received" if token is None else "undecryptable")


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
        conn.executemany(_INSERT_SEALED, [_sealed_row(m, source, now, sealed) for m in fresh])
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
    """``messages`` with each DUP resend of a recorded id-less message given its stored id;
    records every keyed message's final id under its packet id (see ``insert_batch``)."""
    dups = [k.packet_id for m in messages if (k := keys.get(m.id)) is not None and k.dup]
    seen: dict[int, tuple[bytes, str]] = {}
    for i in range(0, len(dups), _MAX_VARS):
        chunk = dups[i : i + _MAX_VARS]
        rows = conn.execute(
            "SELECT packet_id, digest, id FROM mqtt_redelivery WHERE source = ? AND "
            f"packet_id IN ({','.join('?' * len(chunk))})",
            [source, *chunk],
        )
        seen.update((int(p), (bytes(d), str(mid))) for p, d, mid in rows)
    out: list[Message] = []
    records = []
    for m in messages:
        key = keys.get(m.id)
        if key is not None:
            old = seen.get(key.packet_id) if key.dup else None
            if old is not None and old[0] == key.digest:
                m = replace(m, id=old[1])
            records.append((source, key.packet_id, key.digest, m.id))
        out.append(m)
    conn.executemany("INSERT OR REPLACE INTO mqtt_redelivery VALUES (?, ?, ?, ?)", records)
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
