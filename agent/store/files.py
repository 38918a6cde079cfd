"""Downloaded attachments: which message's file is where in the agent's cache folder
(migration 010, ``attachment_files``). Part of ``agent.store``; the files themselves are
``agent.attachments``' to write and remove."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.store.base import _Base
from agent.store.schema import _SELECT, Stored, _stored, chunks, placeholders


class _Files(_Base):
    def set_attachment_file(
        self, message_id: str, path: str | None, *, size: int = 0, mime: str = "",
        error: str | None = None, url: str | None = None,
    ) -> None:  # fmt: skip
        """Record where ``message_id``'s file is (or, with ``path`` None, why there is none).

        ``url`` replaces the message's ``attachment.url`` in the same transaction: an inline
        file's ``data:`` URL (up to 350 KB of base64) once its bytes are in the cache, so the
        row, ``history --json`` and every read of the message stop carrying the file twice.
        """
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO attachment_files VALUES (?, ?, ?, ?, ?, ?)",
                (message_id, path, size, mime, time.time(), error),
            )
            if url is not None:
                conn.execute(
                    "UPDATE messages SET attachment = json_set(attachment, '$.url', ?) "
                    "WHERE id = ? AND attachment IS NOT NULL",
                    (url, message_id),
                )

    def inline_owner(self, path: str) -> tuple[str, str, dict[str, Any]] | None:
        """(message id, type, attachment object) of the message whose row points at cache file
        ``path`` by its ``file:`` URL (an inline file: the cache holds its only bytes), else
        None."""
        rows = self._read(
            "SELECT f.message_id, f.type, m.attachment "
            "FROM attachment_files f JOIN messages m ON m.id = f.message_id "
            "WHERE f.path = ? AND json_extract(m.attachment, '$.url') = ?",
            (path, Path(path).as_uri()),
        )
        if not rows:
            return None
        att = json.loads(rows[0][2])
        return str(rows[0][0]), str(rows[0][1]), att if isinstance(att, dict) else {}

    def restore_attachment_url(self, message_id: str, path: str, url: str) -> None:
        """Put ``url`` (the inline file's ``data:`` URL) back in place of the ``file:`` URL of
        cache file ``path``, which is about to be removed (``cache_max``)."""
        with self._write() as conn:
            conn.execute(
                "UPDATE messages SET attachment = json_set(attachment, '$.url', ?) "
                "WHERE id = ? AND json_extract(attachment, '$.url') = ?",
                (url, message_id, Path(path).as_uri()),
            )

    def attachment_paths(self, message_ids: Sequence[str]) -> dict[str, str]:
        """``message id → local path`` of the files present among ``message_ids``."""
        out: dict[str, str] = {}
        for part in chunks(list(message_ids)):
            rows = self._read(
                "SELECT message_id, path FROM attachment_files WHERE path IS NOT NULL AND "
                f"message_id IN ({placeholders(part)})",
                part,
            )
            out.update((str(m), str(p)) for m, p in rows)
        return out

    def forget_attachment_paths(self, paths: Sequence[str]) -> None:
        """These files were removed from the cache (evicted to stay within ``cache_max``)."""
        with self._write() as conn:
            conn.executemany("DELETE FROM attachment_files WHERE path = ?", [(p,) for p in paths])

    def missing_attachments(self, limit: int = 200) -> list[Stored]:
        """The newest messages with an attachment and no download recorded (none tried yet,
        or the agent stopped before it ended), newest first."""
        rows = self._read(
            f"{_SELECT} WHERE attachment IS NOT NULL AND id NOT IN "
            "(SELECT message_id FROM attachment_files) ORDER BY seq DESC LIMIT ?",
            (limit,),
        )
        return [_stored(r) for r in rows]

    def drop_orphan_attachment_files(self) -> list[str]:
        """Forget the files of messages that are no longer stored (retention removed them);
        returns their paths, for the caller to delete."""
        with self._write() as conn:
            rows = conn.execute(
                "SELECT path FROM attachment_files WHERE message_id NOT IN "
                "(SELECT id FROM messages)"
            ).fetchall()
            conn.execute(
                "DELETE FROM attachment_files WHERE message_id NOT IN (SELECT id FROM messages)"
            )
        return [str(r[0]) for r in rows if r[0]]
