"""The relay's attachment files on disk: written atomically, counted, pruned with their messages.

Theory of operation
-------------------
A file is named by its message id alone (``<cache_dir>/<id>``); what the client called it is
only the message's ``attachment.name``. An upload is streamed into a hidden temporary file
(``.tmp-<id>-<random>``, 0600), fsynced, and renamed to its id (the directory fsynced too)
*before* its message is committed to the store. So whatever a SIGKILL interrupts:

* before the rename: a temporary file and no message: removed at the next start;
* after the rename, before the commit: a file and no message: ``/file/`` answers 404 for it
  (it serves only files whose message it finds) and the sweep removes it;
* after the commit: the message and its complete file.

A message never refers to a file that is not complete on disk, and no partial file is ever
under a served name. ``sweep`` (at start and with each retention run) removes temporary
files, files whose message is gone (pruned, deleted, never committed) and files whose
attachment expired; uploads in flight are skipped. Sizes are counted in memory from a scan at
start, so ``total_size_limit`` is checked without a walk of the directory per upload.

A compressible file may get a gzip copy, ``<id>.gzip``, made by the first download that
accepts gzip (``edge_relay.gzipfile``; not ``<id>.gz``, which aiohttp's ``FileResponse`` would
pick up by itself, for ranges too). It is written the same way (``.tmp-<id>.gzip-<random>``,
fsynced, renamed), counted in the total, removed with its file, and removed as an orphan when
its file is gone; one that would not fit in what is left of the total is not kept.

Limits, each ntfy's 41301 ("attachment too large, or bandwidth limit reached"): the file size
limit, what is left of the total, and the client's daily budget (a bucket of
``daily_bandwidth_limit`` bytes refilling over 24 h, as ntfy's visitor bandwidth limiter).

The disk: by default the cache and the store (``relay.db``) share one file system, and a
store that cannot grow cannot commit text. So an upload may use only the free space above a
reserve (``keep_free`` + ``keep_free_percent`` of the file system's size): one whose
``Content-Length`` is above that room, or that arrives when there is none, is ``DiskFull``
at once, and one that is streamed is ``DiskFull`` as soon as its next chunk would not fit.
The free space (``os.statvfs``, 1.5 µs) is asked again after every ``_RECHECK`` bytes an
upload writes, and sooner when a chunk is above what the last answer left, so uploads
running at once, each counting only its own bytes in between, overshoot the reserve by at
most ``_RECHECK`` + a chunk each. A real ENOSPC or EDQUOT (a reserve of 0, another process
filling the disk) is ``DiskFull`` too. ``DiskFull`` is 507 for that upload, while text
messages, which live in the store, keep working.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import ConfigError, EdgepushError, StoreError
from agent.ntfyproto import NtfyError
from edge_relay.config import Attachments

log = logging.getLogger(__name__)
TMP_PREFIX = ".tmp-"
GZ = ".gzip"
_DAY = 86400.0
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_RECHECK = 256 * 1024
_NO_ROOM = "the relay's attachment cache has no room left on its disk"


class DiskFull(EdgepushError):
    """The attachment cache's file system has no room (HTTP 507)."""


@dataclass
class Budget:
    """Bytes each client may upload: ``limit`` per day, a bucket refilling continuously."""

    limit: int
    period: float = _DAY
    clock: Callable[[], float] = time.monotonic
    _used: dict[str, tuple[float, float]] = field(default_factory=dict)

    def available(self, key: str) -> int:
        used, at = self._used.get(key, (0.0, self.clock()))
        used = max(0.0, used - (self.clock() - at) * self.limit / self.period)
        return max(0, int(self.limit - used))

    def spend(self, key: str, n: int) -> None:
        now = self.clock()
        used = self.limit - self.available(key) + n
        if used <= 0:
            self._used.pop(key, None)
        else:
            self._used[key] = (float(used), now)
        if len(self._used) > 100_000:  # forget the fullest-refilled clients first
            for k in [k for k in self._used if self.available(k) >= self.limit]:
                del self._used[k]


class Upload:
    """One file being received: ``write`` the chunks, then ``commit`` (rename) or ``abort``."""

    def __init__(self, cache: FileCache, mid: str, limit: int, why: str, room: int) -> None:
        self.cache, self.id, self.limit, self._why = cache, mid, limit, why
        self.size = 0
        self._room, self._unchecked = room, 0  # free space above the reserve, as last asked
        self.head = b""
        self.tmp = cache.dir / f"{TMP_PREFIX}{mid}-{secrets.token_hex(4)}"
        self._fd: int | None = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``; NtfyError 41301 past the limit, DiskFull when the disk is."""
        if self.size + len(chunk) > self.limit:
            raise NtfyError(41301, f"the file is above {self._why}", field="attachment")
        if len(self.head) < 8192:
            self.head += chunk[: 8192 - len(self.head)]
        self._make_room(len(chunk))
        assert self._fd is not None
        view = memoryview(chunk)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            raise _disk_error(exc) from None
        self.size += len(chunk)

    def _make_room(self, n: int) -> None:
        """DiskFull unless ``n`` more bytes leave the reserve free (the module docstring)."""
        if n > self._room or self._unchecked >= _RECHECK:
            self._room, self._unchecked = self.cache.room(), 0
            if n > self._room:
                raise DiskFull(self.cache.no_room())
        self._room -= n
        self._unchecked += n

    def commit(self) -> Path:
        """fsync, close and rename to the message id (blocking: run it in a thread)."""
        assert self._fd is not None
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            final = self.cache.dir / self.id
            os.replace(self.tmp, final)
            _fsync_dir(self.cache.dir)
        except OSError as exc:
            self.abort()
            raise _disk_error(exc) from None
        self.cache.added(self.id, self.size)
        return final

    def abort(self) -> None:
        """Close and remove the temporary file (the upload failed or was cut)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.tmp.unlink(missing_ok=True)


class GzipCopy:
    """The gzip copy of one file being written: ``write`` compressed chunks, then ``commit``
    or ``abort`` (blocking calls: run them in a thread)."""

    def __init__(self, cache: FileCache, mid: str) -> None:
        self.cache, self.id = cache, mid
        self.size = 0
        self.failed = False
        self.tmp = cache.dir / f"{TMP_PREFIX}{mid}{GZ}-{secrets.token_hex(4)}"
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        """Into the copy; a failure (a full disk) gives up the copy, never the download."""
        if self.failed:
            return
        try:
            self._file.write(data)
        except OSError as exc:
            self.failed = True
            log.warning("attachments: cannot keep the gzip copy of %s: %s", self.id, exc)
            return
        self.size += len(data)

    def commit(self) -> bool:
        """Keep the copy if its file is still there and it fits in the total; fsynced first,
        so a crash never leaves a torn copy under the served name."""
        if self.failed:
            self.abort()
            return False
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            return self.cache.gzip_done(self)
        except OSError as exc:
            log.warning("attachments: cannot keep the gzip copy of %s: %s", self.id, exc)
            self.abort()
            return False

    def abort(self) -> None:
        """Remove the copy being written. Called on the loop when the download is cut, maybe
        while a thread is still in ``write``: closing may then fail, removing may not."""
        try:
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                self._file.close()
        finally:
            self.tmp.unlink(missing_ok=True)
            self.cache.gzipping.discard(self.id)


class FileCache:
    """The files of ``cfg`` in ``directory``; ``open()`` before use (creates, scans)."""

    def __init__(self, cfg: Attachments, directory: Path) -> None:
        self.cfg = cfg
        self.dir = directory
        self.size = 0
        self.budget = Budget(cfg.daily_bandwidth_limit)
        self._sizes: dict[str, int] = {}
        self._gz: dict[str, int] = {}
        """The sizes of the gzip copies (``<id>.gzip``), also counted in ``size``."""
        self.gzipping: set[str] = set()
        """Ids whose gzip copy is being written: at most one writer each."""
        self._lock = threading.Lock()  # the sweep runs in a thread, uploads on the loop
        self.in_flight: set[str] = set()
        """Ids being uploaded or renamed but not yet committed: the sweep leaves them."""

    def open(self) -> FileCache:
        """Create the directory (0700) and count what it holds; ConfigError naming it."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            for entry in os.scandir(self.dir):
                if entry.name.startswith(TMP_PREFIX):
                    continue  # removed by the first sweep
                if not entry.is_file(follow_symlinks=False):
                    continue
                if entry.name.endswith(GZ):  # an orphan is removed by the first sweep
                    self._gzip_added(entry.name.removesuffix(GZ), entry.stat().st_size)
                else:
                    self.added(entry.name, entry.stat().st_size)
        except OSError as exc:
            raise ConfigError(f"attachments.cache_dir {self.dir}: {exc.strerror}") from None
        return self

    @property
    def remaining(self) -> int:
        return max(0, self.cfg.total_size_limit - self.size)

    def room(self) -> int:
        """Bytes uploads may still write: the free space of the cache's file system above
        the reserve (negative below it)."""
        try:
            st = os.statvfs(self.dir)
        except OSError as exc:
            raise _disk_error(exc) from None
        return st.f_bavail * st.f_frsize - self.reserve(st.f_blocks * st.f_frsize)

    def reserve(self, disk: int) -> int:
        """Bytes kept free for the store on a file system of ``disk`` bytes."""
        return self.cfg.keep_free + int(disk * self.cfg.keep_free_percent / 100)

    def no_room(self) -> str:
        if not self.cfg.keep_free and not self.cfg.keep_free_percent:
            return _NO_ROOM
        return (f"{_NO_ROOM} (it keeps {self.cfg.keep_free} bytes + "
                f"{self.cfg.keep_free_percent:g} % of the disk free for messages)")  # fmt: skip

    def begin(self, mid: str, client: str, declared: int | None) -> Upload:
        """A new upload for message ``mid`` by ``client``; 41301 at once when the declared
        length (``Content-Length``) is already above a limit, DiskFull when it is above the
        room left on the disk (or there is none)."""
        limits = [
            (self.cfg.file_size_limit, f"the file size limit of {self.cfg.file_size_limit} bytes"),
            (self.remaining, f"the {self.remaining} bytes left of the relay's total "
                             f"attachment size limit"),
            (self.budget.available(client), f"this client's daily upload budget "
             f"({self.budget.available(client)} of {self.cfg.daily_bandwidth_limit} bytes left)"),
        ]  # fmt: skip
        limit, why = min(limits, key=lambda lw: lw[0])
        if declared is not None and declared > limit:
            raise NtfyError(41301, f"the body is {declared} bytes, above {why}", "attachment")
        room = self.room()
        if room <= 0 or (declared is not None and declared > room):
            raise DiskFull(self.no_room())
        self.in_flight.add(mid)
        try:
            return Upload(self, mid, limit, why, room)
        except OSError as exc:
            self.in_flight.discard(mid)
            raise _disk_error(exc) from None

    def settled(self, mid: str) -> None:
        """The upload of ``mid`` is over (its message committed, or it failed)."""
        self.in_flight.discard(mid)

    def added(self, mid: str, size: int) -> None:
        with self._lock:
            self.size += size - self._sizes.get(mid, 0)
            self._sizes[mid] = size

    def path(self, mid: str) -> Path | None:
        """The file of message ``mid``, if there is one."""
        return self.dir / mid if mid in self._sizes else None

    def gzip_path(self, mid: str) -> Path | None:
        """The kept gzip copy of message ``mid``'s file, if there is one."""
        return self.dir / f"{mid}{GZ}" if mid in self._gz else None

    def begin_gzip(self, mid: str) -> GzipCopy | None:
        """A new gzip copy of ``mid``'s file, or None when one exists or is being written,
        or the file could not be created (then the caller only compresses as it sends)."""
        with self._lock:
            if mid in self._gz or mid in self.gzipping or mid not in self._sizes:
                return None
            # a copy is optional: never out of the room kept free for the store (at most
            # about the file's size, for a compressible one)
            try:
                if self.room() < self._sizes[mid]:
                    return None
            except DiskFull:
                return None
            self.gzipping.add(mid)
        try:
            return GzipCopy(self, mid)
        except OSError as exc:
            self.gzipping.discard(mid)
            log.warning("attachments: cannot write a gzip copy of %s: %s", mid, exc)
            return None

    def gzip_done(self, copy: GzipCopy) -> bool:
        """Rename a complete copy to ``<id>.gzip`` if its file is still there and it fits."""
        with self._lock:
            keep = copy.id in self._sizes and copy.size <= self.remaining
            if keep:
                os.replace(copy.tmp, self.dir / f"{copy.id}{GZ}")
                self._gz[copy.id] = copy.size
                self.size += copy.size
            self.gzipping.discard(copy.id)
        if not keep:
            copy.tmp.unlink(missing_ok=True)
        return keep

    def _gzip_added(self, mid: str, size: int) -> None:
        with self._lock:
            self.size += size - self._gz.get(mid, 0)
            self._gz[mid] = size

    def remove(self, ids: Iterable[str]) -> int:
        """Remove these ids' files and their gzip copies; the number of files removed."""
        n = 0
        for mid in ids:
            (self.dir / mid).unlink(missing_ok=True)
            (self.dir / f"{mid}{GZ}").unlink(missing_ok=True)
            with self._lock:
                self.size -= self._sizes.pop(mid, 0) + self._gz.pop(mid, 0)
            n += 1
        return n

    def sweep(self, keep: Callable[[list[str]], set[str]]) -> int:
        """Remove temporary files and files that ``keep`` (given the ids on disk) does not
        return; uploads in flight are left. Blocking: run it in a thread."""
        ids, tmp, copies = [], [], []
        busy = self.in_flight | {f"{mid}{GZ}" for mid in set(self.gzipping)}  # copied at once
        for entry in os.scandir(self.dir):
            if entry.name.startswith(TMP_PREFIX):
                if entry.name[len(TMP_PREFIX) :].rsplit("-", 1)[0] not in busy:
                    tmp.append(entry.name)
            elif entry.name.endswith(GZ):
                copies.append(entry.name.removesuffix(GZ))
            elif entry.name not in self.in_flight:
                ids.append(entry.name)
        for name in tmp:
            (self.dir / name).unlink(missing_ok=True)
        kept = keep(ids) if ids else set()
        gone = self.remove(mid for mid in ids if mid not in kept and mid not in self.in_flight)
        on_disk = set(ids) | self.in_flight
        gone += self.remove(mid for mid in copies if mid not in on_disk)  # a copy, no file
        if gone or tmp:
            log.info("attachments: removed %d files and %d unfinished uploads", gone, len(tmp))
        return gone + len(tmp)


def _disk_error(exc: OSError) -> Exception:
    if exc.errno in _FULL:
        return DiskFull(_NO_ROOM)
    log.error("attachments: cannot write a file: %s", exc)
    return StoreError(f"the relay cannot write its attachment cache: {exc.strerror}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
