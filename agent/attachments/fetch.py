"""Blocking I/O of a download (worker threads): stream a URL into a 0600 temporary file in the
cache folder within a size cap and a deadline, and rename it into place."""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.attachments.policy import DownloadError, id_hash
from agent.ntfyproto.attachment import SNIFF_BYTES, data_url_bytes
from agent.private import FILE_MODE, create_private

DEADLINE = 600.0
"""Seconds a whole download may take (a 15 MB file at 25 KB/s)."""
_CHUNK = 64 * 1024


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
    tmp = folder / f".tmp-{id_hash(message_id)[:16]}-{secrets.token_hex(4)}"
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


def install(fetched: Fetched, final: Path) -> None:
    """Rename the finished temporary file into place and make the rename durable."""
    os.replace(fetched.tmp, final)
    with contextlib.suppress(OSError):
        dfd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def unpack(url: str, folder: Path, message_id: str, *, max_bytes: int) -> Fetched:
    """An inline file (a base64 ``data:`` URL, as the relay's bridge forwards small files
    upstream) written to a 0600 temporary file in ``folder``, like a download."""
    try:
        data = data_url_bytes(url, max_bytes)
    except ValueError as exc:
        raise DownloadError(str(exc)) from None
    tmp = folder / f".tmp-{id_hash(message_id)[:16]}-{secrets.token_hex(4)}"
    create_private(tmp, data)
    return Fetched(tmp, len(data), data[:SNIFF_BYTES])
