"""The owned background work: queue, workers and retry timers in one TaskGroup (see the
package docstring for a job's steps)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from agent.attachments.cache import clean_temporary, trim
from agent.attachments.fetch import Fetched, Inflight, fetch, install, unpack
from agent.attachments.policy import (
    DownloadError,
    check,
    check_url,
    decide,
    file_name,
    same_origin,
)
from agent.backoff import backoff
from agent.config import AgentConfig
from agent.e2e import files as e2e_files
from agent.errors import EdgepushError
from agent.ntfyproto.attachment import SNIFF_BYTES, data_url, is_inline
from agent.private import private_dir
from agent.store import Store, Stored

log = logging.getLogger("pushagent.attachments")

ATTEMPTS = 6
WARN_EVERY = 60.0
WORKERS = 2
STARTUP_SCAN = 200
"""Messages looked at on start for downloads a previous run did not finish."""

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
            if exc.logged:
                log.debug("attachment of %s not downloaded: %s", mid, exc)
            else:
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
        if not is_inline(url):
            check_url(url)
        token = None
        if self._token_for is not None and same_origin(url, item.source):
            token = self._token_for(str(item.source))
        https = url.lower().startswith("https://")
        ctx = self._context() if https and self._context is not None else None
        private_dir(self.folder)
        sealed = e2e_files.is_sealed(att)  # an encrypted message's file, 28 bytes longer
        limit = self.cfg.max_download + (e2e_files.OVERHEAD if sealed else 0)
        if is_inline(url):
            fetched = unpack(url, self.folder, item.message.id, max_bytes=limit)
        else:
            fetched = fetch(url, self.folder, item.message.id, token=token,
                            max_bytes=limit, timeout=self.cfg.timeout,
                            context=ctx, inflight=self._inflight)  # fmt: skip
        try:
            if sealed:
                fetched = _decrypted(att, fetched, item.message.id)  # plaintext, or refused
            mime, ext = check(att, self.cfg, fetched.size, fetched.head)
            final = self.folder / file_name(item.message.id, ext)
            install(fetched, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                fetched.tmp.unlink()
        # An inline file's bytes now live in the cache: the row keeps a file: URL, not them.
        here = final.as_uri() if is_inline(url) else None
        self.store.set_attachment_file(item.message.id, str(final), size=fetched.size, mime=mime,
                                       url=here)  # fmt: skip
        removed = trim(self.folder, self.cfg.cache_max, final, self._release)
        if removed:
            self.store.forget_attachment_paths([str(p) for p in removed])
            log.info("attachment cache: removed %d old files (cache_max)", len(removed))
        return final, mime

    def _release(self, path: Path) -> bool:
        """Before ``path`` leaves the cache (``cache_max``): an inline file's message row holds
        its file: URL, and the file is the only copy of its bytes, so they go back into the row
        as their data: URL (fetched again from there when wanted). An encrypted message's file
        is the plaintext: it goes back sealed again under its own key (the row has it), as a
        neutral ``application/octet-stream``, so the row never holds the plaintext. (It used to
        stay in the cache instead, past cache_max, for as long as its message was kept.)"""
        try:
            owner = self.store.inline_owner(str(path))
            if owner is None:
                return True
            mid, mime, att = owner
            data = path.read_bytes()
            if e2e_files.is_sealed(att):
                url = data_url("application/octet-stream", e2e_files.reseal_file(att, data))
            else:
                url = data_url(mime, data)
            self.store.restore_attachment_url(mid, str(path), url)
        except (OSError, EdgepushError) as exc:  # kept: the next trim tries again
            log.warning("attachment cache: %s stays: %s", path.name, exc)
            return False
        return True

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


def _decrypted(att: Mapping[str, Any], fetched: Fetched, message_id: str) -> Fetched:
    """The plaintext of an encrypted attachment in place of its ciphertext (agent.e2e.files);
    a file that does not open is a DownloadError, never kept, and always a warning (not
    rate-limited like a server that is down: it is a changed file, once per message)."""
    try:
        size, head = e2e_files.open_download(att, fetched.tmp, SNIFF_BYTES)
    except e2e_files.FileDecryptError as exc:
        log.warning("attachment of %s not kept: %s", message_id, exc)
        raise DownloadError(str(exc), logged=True) from None
    return Fetched(fetched.tmp, size, head)


def _delay(attempt: int) -> float:
    gen = backoff(initial=2.0, cap=300.0)
    for _ in range(attempt - 1):
        next(gen)
    return next(gen)
