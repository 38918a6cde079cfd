"""What every request handler shares: config, store, hub, auth, limits and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PCounter

from agent.envelope import dumps
from agent.errors import AuthError, ConfigError
from agent.ntfyproto.errors import CODES
from agent.store import Store
from edge_relay import auth
from edge_relay.attachments import FileCache
from edge_relay.config import RelayConfig
from edge_relay.core import ExemptHosts, TokenBucket, rate_key
from edge_relay.hub import Hub
from edge_relay.replay import ReplayCache
from edge_relay.revoke import Streams

log = logging.getLogger(__name__)
_FileKey = tuple[int, int, int]


class Forbidden(Exception):
    """A valid identity without the permission it needs (HTTP 403)."""


def auth_unavailable() -> web.HTTPServiceUnavailable:
    """The 503 for an auth decision the relay cannot make: its auth file is invalid.

    An ``HTTPException`` with a JSON body, which the error middleware passes through as it
    is (ntfy's shape); the reason is in the relay's log, logged once per version of the file.
    """
    body = {
        "code": 50301,
        "http": 503,
        "error": "the relay's auth file is invalid; its operator must fix it (see its log)",
    }
    return web.HTTPServiceUnavailable(text=dumps(body), content_type="application/json")


class Metrics:
    """The relay's Prometheus metrics, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.published = PCounter("edge_relay_published", "Messages accepted", registry=r)
        self.delivered = PCounter(
            "edge_relay_delivered", "Messages sent to subscribers", registry=r
        )
        self.dropped = PCounter(
            "edge_relay_slow_subscribers_dropped", "Subscribers cut for falling behind", registry=r
        )
        self.rejected = PCounter("edge_relay_rejected_requests", "4xx answers", registry=r)
        self.subscribers = Gauge("edge_relay_subscribers", "Open subscriptions", registry=r)
        self.upstream_up = Gauge(
            "edge_relay_upstream_connected", "1 when upstream is up", registry=r
        )
        self.outbox = Gauge("edge_relay_outbox", "Items waiting to go upstream", registry=r)
        self.rejected_messages = Gauge(
            "edge_relay_rejected_messages", "Upstream payloads kept as rejected (ever)", registry=r
        )


@dataclass
class Upstream:
    """What the health endpoint reports about the upstream bridge."""

    url: str | None = None
    state: str = "none"
    outbox: int = 0
    error: Callable[[], str | None] = field(default=lambda: None)
    """Why it is not connected (the transport's last error), asked at each health request."""


@dataclass
class RelayState:
    cfg: RelayConfig
    store: Store
    hub: Hub
    metrics: Metrics = field(default_factory=Metrics)
    upstream: Upstream = field(default_factory=Upstream)
    started: float = field(default_factory=time.time)
    subs_per_client: Counter[str] = field(default_factory=Counter)
    streams: Streams = field(default_factory=Streams)
    """Open subscriptions, re-checked against each new valid auth file (edge_relay.revoke)."""
    replay_cache: ReplayCache = field(default_factory=ReplayCache)
    """Stored messages already encoded for a replay, shared by every subscriber's."""
    files: FileCache = field(init=False)
    """The attachment files (``edge_relay.attachments``), opened with the state."""
    rejected: int = 0
    """Payloads ever kept in the store's ``rejected`` table (``/v1/health``)."""
    _bucket: TokenBucket | None = None
    _exempt: ExemptHosts = field(default_factory=ExemptHosts)
    _auth: auth.AuthDB | None = None
    """The last valid version of the auth file (None: none read yet)."""
    _auth_key: _FileKey | None = None
    _auth_broken: bool = False

    def __post_init__(self) -> None:
        self._bucket = TokenBucket(self.cfg.limits.publish_burst, self.cfg.limits.publish_rate)
        self._exempt = _resolve(ExemptHosts.parse(self.cfg.limits.exempt_hosts))
        self.note_rejected(self.store.rejected_count())
        self.files = FileCache(self.cfg.attachments, self.cfg.attachment_dir).open()

    def note_rejected(self, n: int) -> None:
        """``n`` more payloads were kept as rejected (read on the loop: no store access)."""
        self.rejected += n
        self.metrics.rejected_messages.set(self.rejected)

    def rate_ok(self, client: str) -> bool:
        """One token for the anonymous client at address ``client`` (exempt hosts always
        pass). Kept for callers without a request; handlers use ``check_rate``."""
        assert self._bucket is not None
        return self._exempt.contains(client) or self._bucket.take(rate_key(client, None))

    def check_rate(self, request: web.Request) -> None:
        """Spend one of the client's publish tokens, or raise ntfy's 429 (42901) with
        ``Retry-After``: the whole seconds until the bucket has a token again.

        Keyed by token for an authenticated request, by address otherwise; an address in
        ``limits.exempt_hosts`` is never limited (ntfy exempts by address, token or not)."""
        remote = request.remote or "?"
        if self._exempt.contains(remote):
            return
        ident = self.identify(request)
        key = rate_key(remote, None if ident.name == "anonymous" else ident.name)
        assert self._bucket is not None
        wait = self._bucket.wait(key)
        if wait > 0:
            self.metrics.rejected.inc()  # a 4xx like any other (the middleware passes it on)
            seconds = max(1, math.ceil(wait))
            body = {"code": 42901, "http": 429, "link": CODES[42901][2],
                    "error": f"limit reached: too many requests (publish rate limit; "
                             f"retry in {seconds} s)"}  # fmt: skip
            raise web.HTTPTooManyRequests(
                text=dumps(body), content_type="application/json",
                headers={"Retry-After": str(seconds)},
            )  # fmt: skip

    def authdb(self) -> auth.AuthDB | None:
        """The auth file, re-read when it changed (so ``token add`` needs no restart).

        None without ``--auth-file``. A changed file that is invalid is logged once (this
        version of it) and the last valid one stays in force; with none, every auth decision
        answers 503 (``auth_unavailable``) until the file is fixed. Each new valid version
        ends the open streams it no longer allows.
        """
        path: Path | None = self.cfg.auth_file
        if path is None:
            return None
        key = _file_key(path)
        if key != self._auth_key:
            self._auth_key = key
            self._reload(path)
        if self._auth is None:
            raise auth_unavailable()
        return self._auth

    def _reload(self, path: Path) -> None:
        try:
            db = auth.load(path)
        except ConfigError as exc:
            self._auth_broken = True
            kept = "the last valid version stays in force" if self._auth else (
                "every request that needs a token is refused until it is fixed")  # fmt: skip
            log.error("%s; %s", exc, kept)
            return
        if self._auth_broken:
            log.warning("%s: valid again", path)
        self._auth_broken = False
        self._auth = db
        self.streams.recheck(db)

    async def watch_auth(self, interval: float = 1.0) -> None:
        """Poll the auth file's identity (a stat a second, no inotify) so that a revocation
        closes open streams within seconds even when no request comes in."""
        while True:
            with contextlib.suppress(web.HTTPException):
                self.authdb()
            await asyncio.sleep(interval)

    def identify(self, request: web.Request) -> auth.Identity:
        """Who is asking; AuthError (401) for a bad or unknown token.

        While the auth file is invalid an unknown token answers 503: it may be one the
        broken version adds, so "unknown" cannot be decided.
        """
        token = auth.token_from_request(
            request.headers.get("Authorization"), request.query.get("auth")
        )
        db = self.authdb()
        if db is None:
            return auth.ANONYMOUS_OPEN
        try:
            return db.identify(token)
        except AuthError:
            if self._auth_broken:
                raise auth_unavailable() from None
            raise

    def require(self, ident: auth.Identity, mode: auth.Mode, topic: str) -> None:
        """401 for anonymous without the grant, 403 for a token without it (503 while the
        auth file is invalid: the refusal comes from a version that may be out of date)."""
        if ident.grant.allows(mode, topic):
            return
        if self._auth_broken:
            raise auth_unavailable()
        if ident.name == "anonymous":
            raise AuthError(f"{mode} access to topic {topic!r} needs a token")
        raise Forbidden(f"token {ident.name!r} may not {mode} topic {topic!r}")

    async def to_thread(self, fn: Any, *args: Any, **kw: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kw)


def _resolve(exempt: ExemptHosts) -> ExemptHosts:
    """The exempt host names' addresses, looked up once at start (as ntfy does); a name that
    does not resolve is logged and left out, so a DNS hiccup cannot stop the relay."""
    found: dict[str, list[str]] = {}
    for name in exempt.hostnames:
        try:
            infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
        except OSError as exc:
            log.warning("limits.exempt_hosts: cannot resolve %r (%s); it is not exempt", name, exc)
            continue
        found[name] = sorted({str(info[4][0]) for info in infos})
        log.info("limits.exempt_hosts: %s is %s", name, ", ".join(found[name]))
    return exempt.resolved(found)


def _file_key(path: Path) -> _FileKey:
    """What changes whenever the file does: mtime (ns), size, and inode (``token ...``
    replaces the file, so even two writes within one mtime tick differ)."""
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0, 0)
    return (st.st_mtime_ns, st.st_size, st.st_ino)
