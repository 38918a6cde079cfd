"""The notifier hand-off mark: "everything up to seq N has been handed to the screen".

Why a side file and not a row in SQLite (measured; tests/test_mqtt_delivery.py): the mark is
written on the event loop right after the notifier showed a batch, and the time between the
two is the window in which a SIGKILL makes that batch show again after a restart. A SQLite
write must first take the store's lock, i.e. wait for any batch insert committing in a worker
thread — an fsync, milliseconds — and the 5-kill delivery test printed a batch twice in about
1 run of 8. One ``pwrite`` of 20 bytes needs no lock, takes microseconds, and a SIGKILL cannot
tear it (the kernel copies a small write into the page cache whole). Without an fsync a power
cut can take the mark back a little: the batches since then are shown again, never lost.

The file holds the seq as 20 ASCII digits (``<db>-notified``), overwritten in place.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from agent.errors import StoreError

log = logging.getLogger("pushagent.store")
WIDTH = 20


class HandOffMark:
    """The highest seq handed to the notifier; only moves forward. Thread-safe."""

    def __init__(self, path: Path, floor: Callable[[], int] = lambda: 0) -> None:
        self.path = path
        self._floor = floor  # a fallback copy (the store's), read once, with the file
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._seq: int | None = None

    def get(self) -> int:
        """The mark: the file's, or the fallback copy if that is higher (read once)."""
        with self._lock:
            if self._seq is None:
                self._seq = max(self._floor(), self._read())
            return self._seq

    def advance(self, seq: int) -> None:
        """Everything up to ``seq`` has been handed over; a smaller seq changes nothing."""
        current = self.get()
        with self._lock:
            if seq <= current:
                return
            try:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                os.pwrite(self._fd, b"%0*d" % (WIDTH, seq), 0)
            except OSError as exc:
                raise StoreError(f"{self.path}: cannot write the hand-off mark: {exc}") from None
            self._seq = seq

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _read(self) -> int:
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot read the hand-off mark: {exc}") from None
        digits = text[:WIDTH].strip()
        if not digits.isdigit():
            log.warning("%s: unreadable hand-off mark %r; using the database's copy", self.path,
                        text[:WIDTH])  # fmt: skip
            return 0
        return int(digits)
