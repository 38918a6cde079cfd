"""The store's connection: open and migrate, one write transaction at a time, reads, the meta
table and the notifier hand-off mark. Part of ``agent.store``."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from agent.errors import InvalidState, StoreBusy, StoreError
from agent.handoff import HandOffMark
from agent.private import private_dir, private_file, tighten
from agent.store.migrations import MIGRATIONS
from agent.store.schema import _explain, _passing, chunks, placeholders


class _Base:
    """What every part of the store stands on; ``agent.store.Store`` is the public class."""

    def __init__(self, path: Path, *, busy_timeout: float = 5.0) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._mark = HandOffMark(path.with_name(path.name + "-notified"), self._mark_floor)

    # --- lifecycle ------------------------------------------------------------------------

    def open(self) -> Self:
        """Open (creating if needed) and migrate. Raises StoreError naming the file."""
        try:
            private_dir(self.path.parent)
            # SQLite gives -wal/-shm the main file's mode: so the main file is made 0600
            # before SQLite creates it (agent.private), and older, looser files tightened.
            private_file(self.path)
            for side in ("-wal", "-shm", "-notified"):
                tighten(self.path.with_name(self.path.name + side))
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

    def __enter__(self) -> Self:
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
        """One write transaction; SQLite errors become StoreBusy (retry) or StoreError.

        Inside another write of the same thread (the lock is reentrant) it joins that
        transaction: several store calls can commit as one (``Store.record_receipts``)."""
        with self._lock:
            conn = self.conn
            if conn.in_transaction:
                yield conn
                return
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

    @staticmethod
    def _existing_ids(conn: sqlite3.Connection, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for chunk in chunks(ids):
            rows = conn.execute(
                f"SELECT id FROM messages WHERE id IN ({placeholders(chunk)})", chunk
            )
            found.update(r[0] for r in rows)
        return found

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
        return self._mark.get()

    def _mark_floor(self) -> int:
        # The copy in SQLite, refreshed durably by prune; used only if the side file is lost.
        value = self.get_meta("notified_seq")
        return int(value) if value is not None and value.isdigit() else 0

    def mark_notified(self, seq: int) -> None:
        """Everything up to ``seq`` has been handed to the notifier.

        Written to the side file of ``agent.handoff``: no SQLite lock, so it never waits for
        a batch committing in another thread (that wait was the repeat-on-crash window).
        """
        self._mark.advance(seq)
