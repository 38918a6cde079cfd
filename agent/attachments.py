"""Attachments downloaded into the agent's cache folder, so a file is there when the laptop
wakes, even with the relay gone.

Theory of operation
-------------------
The service hands every newly stored message to ``Downloader.submit`` *after* its commit and
its hand-off to the notifier are queued: a download never delays a message. The downloader
is an async context manager owning its workers and its retry timers in one TaskGroup. A job:

1. ``decide`` (pure) says whether the ``attachment`` object is fetched at all: an http(s)
   ``url`` only, not expired, a declared ``size`` within ``max_download``, and with
   ``download = "images"`` a declared type that is ``image/*`` (or none: then the content
   decides).
2. ``fetch`` (blocking, a worker thread) streams the URL into ``<folder>/.tmp-<id>-<random>``
   (0600): a ``Content-Length`` above the cap is refused before the body, the streamed bytes
   are counted against the cap, no byte for ``timeout`` seconds or the whole download past
   ``DEADLINE`` is a failure. No ``Accept-Encoding`` is sent, so nothing is inflated here.
   The server's token goes with the request only when the URL is on the server the message
   came from (same scheme, host and port), as an unredirected header, so a redirect never
   carries it anywhere.
3. ``check`` (pure) compares the bytes with the object: the declared ``size`` must be what
   arrived, and the type sniffed from the content (``agent.ntfyproto.attachment.sniff``,
   never the extension) must be the declared one (a declared ``application/octet-stream`` or
   none takes what was sniffed).
4. The file is fsynced and renamed to ``<message id><sniffed ext>``, its path recorded in the
   store (``attachment_files``), and the cache trimmed to ``cache_max``, oldest files first.

A failure the server may get over (no connection, a timeout, 5xx, 429) is retried with the
agent's backoff (``agent.backoff``) up to ``ATTEMPTS`` times in this run; what cannot get
better (404, a lie about the type or size, too large, expired) is recorded with its reason
and not tried again. Messages stored while a previous run had not finished downloading are
found again at start (``Store.missing_attachments``). Failures are logged at WARNING at most
once per ``WARN_EVERY`` seconds (a relay down for an hour with a backlog of snapshots must
not fill the log), the rest at DEBUG.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import logging
import os
import re
import secrets
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from agent.backoff import backoff
from agent.config import AgentConfig, AttachmentsConfig
from agent.e2e import files as e2e_files
from agent.errors import EdgepushError
from agent.ntfyproto.attachment import SNIFF_BYTES, sniff
from agent.private import FILE_MODE, private_dir
from agent.store import Store, Stored

log = logging.getLogger("pushagent.attachments")

ATTEMPTS = 6
DEADLINE = 600.0
"""Seconds a whole download may take (a 15 MB file at 25 KB/s)."""
WARN_EVERY = 60.0
WORKERS = 2
STARTUP_SCAN = 200
"""Messages looked at on start for downloads a previous run did not finish."""
_CHUNK = 64 * 1024
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_UNKNOWN = ("", "application/octet-stream")


class DownloadError(Exception):
    """Why a file could not be had; ``retry`` when trying again later may help."""

    def __init__(self, text: str, *, retry: bool = False) -> None:
        super().__init__(text)
        self.retry = retry


class Inflight:
    """The sockets of downloads under way, so stopping the agent ends them at once instead
    of waiting up to ``timeout`` for a worker thread's blocked read."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()

    def add(self, resp: Any) -> socket.socket | None:
        # http.client keeps its socket behind the response's reader (SocketIO._sock)
        sock = getattr(getattr(getattr(resp, "fp", None), "raw", None), "_sock", None)
        if not isinstance(sock, socket.socket):
            return None
        with self._lock:
            if self.stopped.is_set():
                raise DownloadError("the agent is stopping", retry=True)
            self._socks.add(sock)
        return sock

    def discard(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._socks.discard(sock)  # type: ignore[arg-type,unused-ignore]

    def stop(self) -> None:
        """Called on the loop: every blocked read returns (shutdown wakes a recv)."""
        with self._lock:
            self.stopped.set()
            for sock in self._socks:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@dataclass(frozen=True)
class Fetched:
    tmp: Path
    size: int
    head: bytes


# --- pure decisions ---------------------------------------------------------------------------


def essence(mime: Any) -> str:
    """``image/png`` of ``Image/PNG; charset=x``; "" for anything that is not text."""
    return str(mime).split(";", 1)[0].strip().lower() if isinstance(mime, str) else ""


def decide(att: Mapping[str, Any], cfg: AttachmentsConfig, now: float) -> str | None:
    """None when the attachment is to be fetched, else why not (a short phrase)."""
    if cfg.download == "never":
        return "downloads are off"
    url = att.get("url")
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        return "no http(s) url"
    expires = att.get("expires")
    if isinstance(expires, int | float) and not isinstance(expires, bool) and expires < now:
        return "expired"
    size = att.get("size")
    if isinstance(size, int) and not isinstance(size, bool) and size > cfg.max_download:
        return f"{size} bytes is above max_download ({cfg.max_download})"
    declared = essence(att.get("type"))
    if cfg.download == "images" and declared not in _UNKNOWN and not declared.startswith("image/"):
        return f"not an image ({declared})"
    return None


def check(
    att: Mapping[str, Any], cfg: AttachmentsConfig, size: int, head: bytes
) -> tuple[str, str]:
    """(type, extension) of what arrived, sniffed; DownloadError when it is not what the
    attachment object declared, or not an image when only images are kept."""
    declared_size = att.get("size")
    sized = isinstance(declared_size, int) and not isinstance(declared_size, bool)
    if sized and declared_size != size:
        raise DownloadError(f"declared {declared_size} bytes, received {size}")
    mime, ext = sniff(head, str(att.get("name") or ""))
    declared = essence(att.get("type"))
    if declared not in _UNKNOWN and declared != essence(mime):
        raise DownloadError(f"declared {declared}, but the content is {essence(mime)}")
    if cfg.download == "images" and not mime.startswith("image/"):
        raise DownloadError(f"the content is {essence(mime)}, not an image")
    return mime, ext


def same_origin(url: str, server: str | None) -> bool:
    """True when ``url`` is on ``server`` (scheme, host and port): its token may go along."""
    if not server:
        return False
    a, b = urllib.parse.urlsplit(url), urllib.parse.urlsplit(server)

    def origin(u: urllib.parse.SplitResult) -> tuple[str, str, int | None]:
        scheme = u.scheme.lower()
        scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
        try:
            port = u.port or (443 if scheme == "https" else 80)
        except ValueError:
            port = None
        return scheme, (u.hostname or "").lower(), port

    return origin(a) == origin(b) and origin(a)[2] is not None


def file_name(message_id: str, ext: str) -> str:
    """The cache file's name: the message id (hashed when it has characters a file name
    should not) and the sniffed extension."""
    stem = message_id if _SAFE_ID.fullmatch(message_id) else _hash(message_id)
    return stem + ext


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# --- blocking I/O (worker threads) ------------------------------------------------------------


class _Redirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: Any, msg: Any, headers: Any,
                         newurl: str) -> Any:  # fmt: skip
        if not newurl.lower().startswith(("http://", "https://")):
            raise DownloadError(f"redirected to a URL that is not http(s): {newurl[:100]}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch(
    url: str, folder: Path, message_id: str, *, token: str | None, max_bytes: int,
    timeout: float, context: ssl.SSLContext | None, inflight: Inflight | None = None,
) -> Fetched:  # fmt: skip
    """Stream ``url`` into a 0600 temporary file in ``folder``; see the module docstring."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({}), _Redirects()]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    req = urllib.request.Request(url, headers={"User-Agent": "pushagent"})  # noqa: S310
    if token:
        req.add_unredirected_header("Authorization", f"Bearer {token}")
    tmp = folder / f".tmp-{_hash(message_id)[:16]}-{secrets.token_hex(4)}"
    try:
        with opener.open(req, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise DownloadError(f"Content-Length {length} is above max_download ({max_bytes})")
            sock = inflight.add(resp) if inflight is not None else None
            try:
                return _stream(resp, tmp, max_bytes, time.monotonic() + DEADLINE, inflight)
            finally:
                if inflight is not None:
                    inflight.discard(sock)
    except urllib.error.HTTPError as exc:
        exc.close()
        retry = exc.code >= 500 or exc.code in (408, 429)
        raise DownloadError(f"HTTP {exc.code}", retry=retry) from None
    except (OSError, TimeoutError, http.client.HTTPException) as exc:  # IncompleteRead too
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise DownloadError(str(exc) or type(exc).__name__, retry=True) from None


def _stream(
    resp: Any, tmp: Path, max_bytes: int, deadline: float, inflight: Inflight | None = None
) -> Fetched:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    size, head = 0, b""
    try:
        os.fchmod(fd, FILE_MODE)
        while chunk := resp.read(_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise DownloadError(f"more than max_download ({max_bytes}) bytes")
            if time.monotonic() > deadline:
                raise DownloadError(f"not done after {DEADLINE:.0f} s", retry=True)
            if len(head) < SNIFF_BYTES:
                head += chunk[: SNIFF_BYTES - len(head)]
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        if inflight is not None and inflight.stopped.is_set():  # cut by stop(), not the end
            raise DownloadError("the agent is stopping", retry=True)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.close(fd)
    return Fetched(tmp, size, head)


def _decrypted(att: Mapping[str, Any], fetched: Fetched, message_id: str) -> Fetched:
    """The plaintext of an encrypted attachment in place of its ciphertext (agent.e2e.files);
    a file that does not open is a DownloadError, never kept, and always a warning (not
    rate-limited like a server that is down: it is a changed file, once per message)."""
    try:
        size, head = e2e_files.open_download(att, fetched.tmp, SNIFF_BYTES)
    except e2e_files.FileDecryptError as exc:
        log.warning("attachment of %s not kept: %s", message_id, exc)
        raise DownloadError(str(exc)) from None
    return Fetched(fetched.tmp, size, head)


def install(fetched: Fetched, final: Path) -> None:
    """Rename the finished temporary file into place and make the rename durable."""
    os.replace(fetched.tmp, final)
    with contextlib.suppress(OSError):
        dfd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def trim(folder: Path, limit: int, keep: Path) -> list[Path]:
    """Remove the oldest files until the folder holds at most ``limit`` bytes (never
    ``keep``, the file just added); returns what was removed."""
    files = []
    for entry in os.scandir(folder):
        if entry.is_file(follow_symlinks=False) and not entry.name.startswith(".tmp-"):
            st = entry.stat(follow_symlinks=False)
            files.append((st.st_mtime, st.st_size, Path(entry.path)))
    total = sum(size for _, size, _ in files)
    removed = []
    for _, size, path in sorted(files):
        if total <= limit:
            break
        if path == keep:
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        total -= size
        removed.append(path)
    return removed


def clean_temporary(folder: Path) -> None:
    """Remove what a killed run left half-written."""
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if entry.name.startswith(".tmp-"):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


# --- the owned background work ----------------------------------------------------------------

FileReady = Callable[[Stored, Path, str], None]
"""Called on the loop when a message's file is in the cache: (message, path, type)."""


class Downloader:
    """Background downloads of attachments: ``submit`` never waits."""

    def __init__(
        self,
        cfg: AgentConfig,
        store: Store,
        *,
        token_for: Callable[[str], str | None] | None = None,
        on_file: FileReady | None = None,
        context: Callable[[], ssl.SSLContext] | None = None,
    ) -> None:
        self.cfg = cfg.attachments
        self.folder = cfg.paths.cache_dir / "attachments"
        self.store = store
        self.on_file = on_file
        self._token_for = token_for
        self._context = context
        self._queue: asyncio.Queue[tuple[Stored, int]] = asyncio.Queue()
        self._busy: set[str] = set()
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last_warn = 0.0
        self._quiet = 0
        self._inflight = Inflight()
        self.done = 0
        self.failed = 0

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(private_dir, self.folder)
        await asyncio.to_thread(clean_temporary, self.folder)
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        for _ in range(WORKERS):
            self._spawn(self._worker())
        if self.cfg.download != "never":
            self._spawn(self._resume())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self._inflight.stop()
        for task in list(self._tasks):
            task.cancel()
        if self._tg is not None:
            await self._tg.__aexit__(None, None, None)

    def _spawn(self, coro: Any) -> None:
        assert self._tg is not None
        task = self._tg.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def submit(self, items: Sequence[Stored]) -> None:
        """Queue the attachments of newly stored messages (those it should fetch)."""
        now = time.time()
        for item in items:
            att = item.message.attachment
            if att is None or item.message.id in self._busy or item.state == "undecryptable":
                continue
            why = decide(att, self.cfg, now)
            if why is not None:
                log.debug("attachment of %s not downloaded: %s", item.message.id, why)
                continue
            self._busy.add(item.message.id)
            self._queue.put_nowait((item, 1))

    async def _resume(self) -> None:
        try:
            items = await asyncio.to_thread(self.store.missing_attachments, STARTUP_SCAN)
        except EdgepushError as exc:
            log.warning("cannot look for unfinished downloads: %s", exc)
            return
        self.submit(items[::-1])

    async def _worker(self) -> None:
        while True:
            item, attempt = await self._queue.get()
            try:
                await self._job(item, attempt)
            except Exception:  # a bug here must not end the agent: that message's file is lost
                log.exception("attachment of %s: download failed", item.message.id)
                self._busy.discard(item.message.id)

    async def _job(self, item: Stored, attempt: int) -> None:
        mid = item.message.id
        try:
            path, mime = await asyncio.to_thread(self._download, item)
        except DownloadError as exc:
            if exc.retry and attempt < ATTEMPTS:
                delay = _delay(attempt)
                self._warn(f"attachment of {mid}: {exc}; retrying in {delay:.0f} s")
                self._spawn(self._later(item, attempt + 1, delay))
                return
            self._busy.discard(mid)
            self.failed += 1
            self._warn(f"attachment of {mid} not downloaded: {exc}")
            if not exc.retry:  # a retryable one is tried again at the next start
                with contextlib.suppress(EdgepushError):
                    await asyncio.to_thread(self.store.set_attachment_file, mid, None,
                                            error=str(exc)[:300])  # fmt: skip
            return
        except (OSError, EdgepushError) as exc:  # the cache folder or the store
            self._busy.discard(mid)
            self.failed += 1
            self._warn(f"attachment of {mid}: cannot keep it: {exc}")
            return
        self._busy.discard(mid)
        self.done += 1
        log.debug("attachment of %s: %s (%s)", mid, path, mime)
        if self.on_file is not None:
            self.on_file(item, path, mime)

    async def _later(self, item: Stored, attempt: int, delay: float) -> None:
        await asyncio.sleep(delay)
        self._queue.put_nowait((item, attempt))

    def _download(self, item: Stored) -> tuple[Path, str]:
        att = item.message.attachment or {}
        url = str(att["url"])
        token = None
        if self._token_for is not None and same_origin(url, item.source):
            token = self._token_for(str(item.source))
        https = url.lower().startswith("https://")
        ctx = self._context() if https and self._context is not None else None
        private_dir(self.folder)
        sealed = e2e_files.is_sealed(att)  # an encrypted message's file, 28 bytes longer
        limit = self.cfg.max_download + (e2e_files.OVERHEAD if sealed else 0)
        fetched = fetch(url, self.folder, item.message.id, token=token, max_bytes=limit,
                        timeout=self.cfg.timeout, context=ctx, inflight=self._inflight)  # fmt: skip
        try:
            if sealed:
                fetched = _decrypted(att, fetched, item.message.id)  # plaintext, or refused
            mime, ext = check(att, self.cfg, fetched.size, fetched.head)
            final = self.folder / file_name(item.message.id, ext)
            install(fetched, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                fetched.tmp.unlink()
        self.store.set_attachment_file(item.message.id, str(final), size=fetched.size, mime=mime)
        removed = trim(self.folder, self.cfg.cache_max, final)
        if removed:
            self.store.forget_attachment_paths([str(p) for p in removed])
            log.info("attachment cache: removed %d old files (cache_max)", len(removed))
        return final, mime

    async def sweep(self) -> int:
        """Remove the files of messages retention has pruned; how many were removed."""
        paths = await asyncio.to_thread(self.store.drop_orphan_attachment_files)
        return await asyncio.to_thread(self._unlink, paths)

    def _unlink(self, paths: Sequence[str]) -> int:
        gone = 0
        for name in paths:
            path = Path(name)
            if path.parent != self.folder:  # only ever our own folder's files
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                gone += 1
        return gone

    def _warn(self, text: str) -> None:
        now = time.monotonic()
        if now - self._last_warn >= WARN_EVERY:
            more = f" ({self._quiet} more since the last warning)" if self._quiet else ""
            log.warning("%s%s", text, more)
            self._last_warn, self._quiet = now, 0
        else:
            self._quiet += 1
            log.debug("%s", text)


def _delay(attempt: int) -> float:
    gen = backoff(initial=2.0, cap=300.0)
    for _ in range(attempt - 1):
        next(gen)
    return next(gen)
