"""Acknowledge-until-acked in the store: the agent's re-alert schedule and the relay's record
of who acknowledged. Part of ``agent.store``; the tables and triggers are migration 013.

The schedule rows are made and removed by triggers (see ``migrations._m013_ack``), so every path
that stores a message or sets ``acknowledged`` keeps them right in its own transaction; this
module only reads the next due row and moves it on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.store.base import _Base


@dataclass(frozen=True, slots=True)
class Realert:
    """One message's re-alert schedule (agent side)."""

    message_id: str
    due: float
    retry: float
    expires: float
    count: int


@dataclass(frozen=True, slots=True)
class AckRecord:
    """Who acknowledged a message first, as the relay recorded it."""

    message_id: str
    owner: str
    device: str
    device_name: str
    time: float
    """When the device says it acknowledged (its clock, bounded by the relay's)."""
    recorded: float
    """When the relay recorded it (its own clock): the order that decides who was first."""


class _Acks(_Base):
    # --- the agent's re-alert schedule -----------------------------------------------------

    def realert_next(self) -> Realert | None:
        """The schedule row due first, if any."""
        rows = self._read(
            "SELECT message_id, due, retry, expires, count FROM realerts ORDER BY due LIMIT 1"
        )
        return _realert(rows[0]) if rows else None

    def realert_get(self, message_id: str) -> Realert | None:
        rows = self._read(
            "SELECT message_id, due, retry, expires, count FROM realerts WHERE message_id = ?",
            (message_id,),
        )
        return _realert(rows[0]) if rows else None

    def realert_count(self) -> int:
        return int(self._read("SELECT count(*) FROM realerts")[0][0])

    def realert_moved(self, message_id: str, due: float, count: int) -> None:
        """The row's next due time (and how many re-alerts it has had); a row deleted
        meanwhile (acknowledged) stays deleted."""
        with self._write() as conn:
            conn.execute(
                "UPDATE realerts SET due = ?, count = ? WHERE message_id = ?",
                (due, count, message_id),
            )

    def realert_done(self, message_id: str) -> None:
        """No more re-alerts for this message (expired, or gone)."""
        with self._write() as conn:
            conn.execute("DELETE FROM realerts WHERE message_id = ?", (message_id,))

    # --- the relay's record of who acknowledged ---------------------------------------------

    def ack_record(
        self, message_id: str, *, owner: str, device: str, device_name: str, at: float
    ) -> bool:
        """Record an acknowledgement; only the first one per message is kept (the relay's
        order of recording, not the devices' clocks). True if this one was first."""
        return bool(self.ack_record_many([(message_id, device, device_name, at)], owner=owner))

    def ack_record_many(
        self, acks: Sequence[tuple[str, str, str, float]], *, owner: str
    ) -> list[str]:
        """``(message_id, device, device_name, time)`` acknowledgements in ONE transaction
        (a burst of them is one write); the ids for which one of these was the first."""
        now = time.time()
        first: list[str] = []
        with self._write() as conn:
            for mid, device, name, at in acks:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO acks VALUES (?, ?, ?, ?, ?, ?)",
                    (mid, owner, device, name, at, now),
                )
                if cur.rowcount == 1:
                    first.append(mid)
        return first

    def ack_get(self, message_id: str) -> AckRecord | None:
        rows = self._read("SELECT * FROM acks WHERE message_id = ?", (message_id,))
        if not rows:
            return None
        mid, owner, device, name, at, recorded = rows[0]
        return AckRecord(str(mid), str(owner), str(device), str(name), float(at), float(recorded))


def _realert(row: tuple[Any, ...]) -> Realert:
    mid, due, retry, expires, count = row
    return Realert(str(mid), float(due), float(retry), float(expires), int(count))
