"""Notification icons from ntfy's ``icon`` field: an http(s) URL fetched once, kept on disk.

A notification server takes an icon as a file, so the URL is fetched by us: at most
``MAX_BYTES``, within ``TIMEOUT`` seconds, only when the answer says ``Content-Type: image/*``,
in a worker thread (the event loop never waits on the network; the notifier waits at most
``TIMEOUT`` for a new URL, and not at all for one already cached). The file is named by the
URL's SHA-256 in the agent's cache folder (0700, files 0600), so the next message with the
same icon costs a ``stat``. A failure is logged once per URL and the notification is shown
without the icon; the URL is not tried again by this process.
Only http(s): a message must not make the notification server read a local file.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import logging
import urllib.request
from pathlib import Path

from agent.private import private_dir, write_private

log = logging.getLogger("pushagent.notify.icons")
MAX_BYTES = 512 * 1024
TIMEOUT = 5.0
_TYPES = {
    "image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/svg+xml": ".svg",
    "image/webp": ".webp", "image/x-icon": ".ico", "image/vnd.microsoft.icon": ".ico",
}  # fmt: skip


class IconError(Exception):
    """Why an icon URL gave no usable image."""


def fetch(url: str, max_bytes: int = MAX_BYTES, timeout: float = TIMEOUT) -> tuple[bytes, str]:
    """``(bytes, suffix)`` of the image at ``url``; raises IconError naming what was wrong."""
    if not url.lower().startswith(("http://", "https://")):
        raise IconError("not an http(s) URL")
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "edgepush-agent"})  # noqa: S310
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - scheme checked
            kind = resp.headers.get_content_type()
            if not kind.startswith("image/"):
                raise IconError(f"answered Content-Type {kind}, not image/*")
            data = resp.read(max_bytes + 1)
    except OSError as exc:
        raise IconError(str(exc) or type(exc).__name__) from None
    except (ValueError, http.client.HTTPException) as exc:  # UnicodeError, InvalidURL too
        # ntfy takes any https?://.+ as an icon: a host that is none ("http://[::1", a label
        # above 63 characters) or a port that is no port fails here, before any request.
        # Uncaught, it ended the notifier's show and the agent (again at every start).
        raise IconError(f"not a usable URL: {exc}") from None
    if len(data) > max_bytes:
        raise IconError(f"larger than {max_bytes} bytes")
    if not data:
        raise IconError("empty answer")
    return data, _TYPES.get(kind, ".img")


class IconCache:
    """URL → local file, fetched at most once per process."""

    def __init__(self, folder: Path, timeout: float = TIMEOUT) -> None:
        self.folder = folder
        self.timeout = timeout
        self._failed: set[str] = set()

    def _path(self, url: str, suffix: str) -> Path:
        return self.folder / (hashlib.sha256(url.encode()).hexdigest()[:32] + suffix)

    def _cached(self, url: str) -> Path | None:
        for suffix in (*dict.fromkeys(_TYPES.values()), ".img"):
            path = self._path(url, suffix)
            if path.exists():
                return path
        return None

    def _load(self, url: str) -> Path:
        data, suffix = fetch(url, timeout=self.timeout)
        private_dir(self.folder)
        path = self._path(url, suffix)
        write_private(path, data)
        return path

    async def get(self, url: str) -> Path | None:
        """The icon's file, or None (logged once per URL) when it cannot be had."""
        if url in self._failed:
            return None
        cached = await asyncio.to_thread(self._cached, url)
        if cached is not None:
            return cached
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._load, url), self.timeout + 1)
        except (IconError, OSError, TimeoutError) as exc:
            self._failed.add(url)
            log.warning("icon %s not shown: %s", url[:200], str(exc)[:200] or type(exc).__name__)
            return None
