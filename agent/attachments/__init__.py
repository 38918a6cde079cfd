"""Attachments downloaded into the agent's cache folder, so a file is there when the laptop
wakes, even with the relay gone.

Theory of operation
-------------------
The package: ``policy`` (pure decisions), ``fetch`` (blocking download I/O), ``cache``
(the folder's size policy), ``downloader`` (the owned background work).

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

from agent.attachments.cache import clean_temporary, trim
from agent.attachments.downloader import ATTEMPTS, Downloader, FileReady
from agent.attachments.fetch import DEADLINE, Fetched, Inflight, fetch, install
from agent.attachments.policy import (
    DownloadError,
    check,
    decide,
    essence,
    file_name,
    same_origin,
)

__all__ = [
    "ATTEMPTS",
    "DEADLINE",
    "DownloadError",
    "Downloader",
    "Fetched",
    "FileReady",
    "Inflight",
    "check",
    "clean_temporary",
    "decide",
    "essence",
    "fetch",
    "file_name",
    "install",
    "same_origin",
    "trim",
]
