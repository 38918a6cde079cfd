"""The store's tables as named, ordered migrations (``MIGRATIONS``, applied in order by
``agent.store.base`` and recorded in ``_migrations``). Append only: never edit one that has
shipped; a change is a new migration."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite_utils

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


def _m014_mqtt_retained(db: sqlite_utils.Database) -> None:
    # The last id-less MQTT message per server and topic, with the broker session it came in:
    # a retained copy of it, sent again at a reconnect's SUBSCRIBE, takes its id
    # (agent.store.retained).
    db.execute(
        """CREATE TABLE mqtt_retained (
            source TEXT NOT NULL,
            topic TEXT NOT NULL,
            session TEXT NOT NULL,
            digest BLOB NOT NULL,
            id TEXT NOT NULL,
            PRIMARY KEY (source, topic)
        ) WITHOUT ROWID"""
    )


def _m015_sealed_marks(db: sqlite_utils.Database) -> None:
    # Rows whose stored form is end-to-end encrypted but unmarked: what a relay stored before
    # it passed encrypted= (it keeps the JWE, never decrypts). Marked 'jwe' by the test
    # agent.e2e.seal.is_sealed applies at arrival (encoding, content type, or the JWE shape
    # of jwe.looks_like: 'eyJ', four dots, no space), so the same id coming again sealed is
    # a redelivery, not "not merged" (agent.store.sealed). An agent marks every arrival since
    # 009: on its side only rows stored before 009, which the same rule holds for.
    db.execute(
        "UPDATE messages SET e2e = 'jwe' WHERE e2e IS NULL AND ("
        "CASE WHEN json_valid(extra) THEN json_extract(extra, '$.encoding') END = 'jwe' OR "
        "content_type = 'application/jose' OR "
        "(substr(message, 1, 3) = 'eyJ' AND instr(message, ' ') = 0 AND "
        "length(message) - length(replace(message, '.', '')) = 4))"
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
    ("014_mqtt_retained", _m014_mqtt_retained),
    ("015_sealed_marks", _m015_sealed_marks),
)
