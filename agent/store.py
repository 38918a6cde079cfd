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

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from json.encoder import encode_basestring
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.envelope import Message, dumps, encode
from agent.errors import InvalidState, StoreBusy, StoreError
from agent.handoff import HandOffMark
from agent.timeparse import Since

STATES = ("received", "delivered", "displayed", "clicked", "dismissed", "read")
# A message's state only moves forward: a late "displayed" never hides a "clicked".
_RANK = {"received": 0, "delivered": 0, "displayed": 1, "dismissed": 2, "clicked": 3, "read": 4}
_COLUMNS = (
    "id", "time", "expires", "topic", "title", "message", "priority", "tags", "click",
    "actions", "attachment", "content_type", "extra", "source", "received",
)  # fmt: skip
_INSERT = (
    f"INSERT OR IGNORE INTO messages ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
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


MIGRATIONS: tuple[tuple[str, Callable[[sqlite_utils.Database], None]], ...] = (
    ("001_messages", _m001_messages),
    ("002_cursors_outbox_receipts", _m002_cursors_outbox_receipts),
    ("003_fts_per_batch", _m003_fts_per_batch),
    ("004_mqtt_redelivery", _m004_mqtt_redelivery),
)


class Store:
    """The agent's (and the relay's) SQLite database. Use as a context manager."""

    def __init__(self, path: Path, *, busy_timeout: float = 5.0) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._mark = HandOffMark(path.with_name(path.name + "-notified"))

    # --- lifecycle ------------------------------------------------------------------------

    def open(self) -> Store:
        """Open (creating if needed) and migrate. Raises StoreError naming the file."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None,
                check_same_thread=False,
            )  # fmt: skip
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{self.path}: cannot open database: {exc}") from None
        self._conn = conn
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as exc:
            self.close()
            raise StoreError(f"{self.path}: {_explain(exc)}") from None
        return self

    def close(self) -> None:
        self._mark.close()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Store:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise InvalidState("store used while closed")
        return self._conn

    def _migrate(self) -> None:
        conn = self.conn
        if self._applied() == [name for name, _ in MIGRATIONS]:
            return  # the common case: a reader never needs the write lock
        # Imported only when a migration runs: it costs ~120 ms, more than a whole
        # `pushagent history` on a current database (measured; bench/store_ingest.py).
        import sqlite_utils

        db = sqlite_utils.Database(conn)
        with self._write():
            conn.execute(
                "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied REAL)"
            )
            done = set(self._applied())
            for name, step in MIGRATIONS:
                if name not in done:
                    step(db)
                    conn.execute("INSERT INTO _migrations VALUES (?, ?)", (name, time.time()))

    def _applied(self) -> list[str]:
        try:
            rows = self.conn.execute("SELECT name FROM _migrations ORDER BY name").fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        return [r[0] for r in rows]

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; SQLite errors become StoreBusy (retry) or StoreError."""
        with self._lock:
            conn = self.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                text = str(exc)
                if _passing(text):
                    raise StoreBusy(f"{self.path}: {text}") from None
                raise StoreError(f"{self.path}: {_explain(exc)}") from None
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StoreError(f"{self.path}: {_explain(exc)}") from None

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self.conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                kind = StoreBusy if _passing(str(exc)) else StoreError
                raise kind(f"{self.path}: {_explain(exc)}") from None

    # --- messages ---------------------------------------------------------------------------

    def insert_batch(
        self,
        messages: Sequence[Message],
        *,
        source: str | None = None,
        cursor: tuple[str, str] | None = None,
        receipt_destination: str | None = None,
        device: str = "",
        forward: Callable[[Message], str | None] | None = None,
        redelivery: Mapping[str, Redelivery] | None = None,
    ) -> list[Stored]:
        """Store a batch in one transaction; return the messages that were new, in order.

        ``cursor=(source, subscription)`` saves the last message id of the batch as that
        subscription's position, atomically with the messages. ``receipt_destination`` queues
        a ``delivered`` receipt for each new message in the outbox, in the same transaction.
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
        """
        if not messages:
            return []
        now = time.time()
        with self._write() as conn:
            if redelivery:
                messages = _redelivered(conn, messages, source or "", redelivery)
            known = self._existing_ids(conn, [m.id for m in messages])
            fresh: list[Message] = []
            for m in messages:
                if m.id not in known:
                    known.add(m.id)
                    fresh.append(m)
            before = _last_seq(conn) if fresh else 0
            if fresh:
                conn.executemany(_INSERT, [_row(m, source, now) for m in fresh])
            last = _last_seq(conn) if fresh else 0
            if fresh:
                conn.execute(
                    "INSERT INTO messages_fts (rowid, title, message, tags) "
                    "SELECT seq, title, message, tags FROM messages WHERE seq > ?",
                    (before,),
                )
            if cursor is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO cursors VALUES (?, ?, ?, ?)",
                    (cursor[0], cursor[1], messages[-1].id, now),
                )
            if receipt_destination is not None and fresh:
                self._queue_receipts(
                    conn, [(m.id, "delivered", now) for m in fresh], receipt_destination, device
                )
            if forward is not None:
                rows = [(dest, m) for m in fresh if (dest := forward(m)) is not None]
                conn.executemany(
                    "INSERT INTO outbox (kind, destination, payload, created) VALUES (?, ?, ?, ?)",
                    [("message", dest, dumps(encode(m)), now) for dest, m in rows],
                )
        first = last - len(fresh) + 1
        return [Stored(first + i, m, "received", source) for i, m in enumerate(fresh)]

    @staticmethod
    def _existing_ids(conn: sqlite3.Connection, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(ids), _MAX_VARS):
            chunk = ids[i : i + _MAX_VARS]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(f"SELECT id FROM messages WHERE id IN ({marks})", chunk)
            found.update(r[0] for r in rows)
        return found

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
        rows = [_stored(r) for r in self._read(sql, params)]
        return rows[::-1] if newest else rows

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

    def get_meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str | None) -> None:
        with self._write() as conn:
            if value is None:
                conn.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def meta_default(self, key: str, make: Callable[[], str]) -> str:
        """The value under ``key``, storing ``make()`` there first if there is none."""
        with self._write() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            if row is not None:
                return str(row[0])
            value = make()
            conn.execute("INSERT INTO meta VALUES (?, ?)", (key, value))
            return value

    # --- notifier hand-off --------------------------------------------------------------------

    def notified_seq(self) -> int:
        """The hand-off mark (``agent.handoff``): 0 on a fresh database."""
        return self._mark.get(self._mark_floor())

    def _mark_floor(self) -> int:
        # The copy in SQLite, refreshed durably by prune; used only if the side file is lost.
        value = self.get_meta("notified_seq")
        return int(value) if value is not None and value.isdigit() else 0

    def pending_notifications(self, limit: int = 1000) -> list[Stored]:
        """Stored messages not yet handed to the notifier, oldest first."""
        return self.query(after_seq=self.notified_seq(), limit=limit, newest=False)

    def mark_notified(self, seq: int) -> None:
        """Everything up to ``seq`` has been handed to the notifier.

        Written to the side file of ``agent.handoff``: no SQLite lock, so it never waits for
        a batch committing in another thread (that wait was the repeat-on-crash window).
        """
        self._mark.advance(seq)

    # --- states, receipts and the outbox ---------------------------------------------------------

    def record_states(
        self,
        events: Sequence[tuple[str, str, float]],
        *,
        receipt_destination: str | None = None,
        device: str = "",
    ) -> int:
        """Record ``(message_id, state, time)`` events; queue receipts if a destination is set.

        A message's visible state only moves forward (read beats clicked beats displayed).
        Unknown ids are ignored. Returns how many events named a stored message.
        """
        for _, state, _ in events:
            if state not in STATES:
                raise ValueError(f"unknown state {state!r}; expected one of {', '.join(STATES)}")
        with self._write() as conn:
            ids = [e[0] for e in events]
            known = self._existing_ids(conn, ids)
            valid = [e for e in events if e[0] in known]
            for message_id, state, _ in valid:
                conn.execute(
                    "UPDATE messages SET state = ? WHERE id = ? AND "
                    "(CASE state WHEN 'read' THEN 4 WHEN 'clicked' THEN 3 WHEN 'dismissed' "
                    "THEN 2 WHEN 'displayed' THEN 1 ELSE 0 END) < ?",
                    (state, message_id, _RANK[state]),
                )
            conn.executemany(
                "INSERT OR IGNORE INTO receipts VALUES (?, ?, ?, ?)",
                [(mid, st, device, t) for mid, st, t in valid],
            )
            if receipt_destination is not None:
                self._queue_receipts(conn, valid, receipt_destination, device)
        return len(valid)

    @staticmethod
    def _queue_receipts(
        conn: sqlite3.Connection,
        events: Sequence[tuple[str, str, float]],
        destination: str,
        device: str,
    ) -> None:
        rows = []
        for message_id, state, at in events:
            body: dict[str, Any] = {"id": message_id, "state": state, "time": int(at)}
            if device:
                body["device"] = device
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

    # --- retention ------------------------------------------------------------------------------

    def prune(self, *, max_age: float, max_messages: int, now: float | None = None) -> int:
        """Delete messages older than ``max_age`` seconds or beyond the newest ``max_messages``.

        A message's age counts from the later of its publish ``time`` and when it was stored:
        a publisher without a real-time clock (a Pi without NTP stamps 1970) must not make
        today's message vanish at the next prune. Messages not yet handed to the notifier are
        kept whatever their age. Returns how many were deleted.
        """
        cutoff = (now if now is not None else time.time()) - max_age
        keep_after = self.notified_seq()
        with self._write() as conn:
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
        return deleted


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
