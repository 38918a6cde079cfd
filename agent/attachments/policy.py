"""Pure decisions about an attachment object: fetch it or not, does what arrived match it,
may the server's token go along, what the cache file is called. No I/O."""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from agent.config import AttachmentsConfig
from agent.ntfyproto.attachment import is_inline, sniff

_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_UNKNOWN = ("", "application/octet-stream")


class DownloadError(Exception):
    """Why a file could not be had; ``retry`` when trying again later may help; ``logged``
    when a warning already said so (the downloader then adds none)."""

    def __init__(self, text: str, *, retry: bool = False, logged: bool = False) -> None:
        super().__init__(text)
        self.retry = retry
        self.logged = logged


def essence(mime: Any) -> str:
    """``image/png`` of ``Image/PNG; charset=x``; "" for anything that is not text."""
    return str(mime).split(";", 1)[0].strip().lower() if isinstance(mime, str) else ""


def decide(att: Mapping[str, Any], cfg: AttachmentsConfig, now: float) -> str | None:
    """None when the attachment is to be fetched, else why not (a short phrase)."""
    if cfg.download == "never":
        return "downloads are off"
    url = att.get("url")
    web = isinstance(url, str) and url.lower().startswith(("http://", "https://"))
    if not web and not is_inline(url):
        return "no http(s) url"  # nor an inline data: URL
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


def check_url(url: str) -> None:
    """DownloadError (not retryable) for an http(s) ``url`` no download can use, naming why.

    ntfy takes any ``https?://.+`` as an attachment URL, so a message may carry one whose
    host is not a host (``http://[::1``, a 70-character label) or whose port is not a port;
    urllib would raise ValueError/UnicodeError deep in a download (a "bug", a traceback, and
    the same again at every start) or InvalidURL (tried six times, then at every start)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host, _port = parts.hostname, parts.port  # the port: ValueError unless in 0-65535
        if not host:
            raise ValueError("it names no host")
        host.encode("idna")  # UnicodeError: a label empty or above 63 characters
    except ValueError as exc:  # UnicodeError is one
        raise DownloadError(f"the attachment URL {url[:100]!r} cannot be fetched: {exc}") from None


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
    stem = message_id if _SAFE_ID.fullmatch(message_id) else id_hash(message_id)
    return stem + ext


def id_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]
