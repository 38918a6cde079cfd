"""What every request handler shares: config, store, hub, auth, limits and metrics."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PCounter

from agent.errors import AuthError
from agent.store import Store
from edge_relay import auth
from edge_relay.config import RelayConfig
from edge_relay.core import TokenBucket
from edge_relay.hub import Hub


class Forbidden(Exception):
    """A valid identity without the permission it needs (HTTP 403)."""


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


@dataclass
class RelayState:
    cfg: RelayConfig
    store: Store
    hub: Hub
    metrics: Metrics = field(default_factory=Metrics)
    upstream: Upstream = field(default_factory=Upstream)
    started: float = field(default_factory=time.time)
    subs_per_client: Counter[str] = field(default_factory=Counter)
    rejected: int = 0
    """Payloads ever kept in the store's ``rejected`` table (``/v1/health``)."""
    _bucket: TokenBucket | None = None
    _auth: auth.AuthDB | None = None
    _auth_mtime: float = -1.0

    def __post_init__(self) -> None:
        self._bucket = TokenBucket(self.cfg.limits.publish_burst, self.cfg.limits.publish_rate)
        self.note_rejected(self.store.rejected_count())

    def note_rejected(self, n: int) -> None:
        """``n`` more payloads were kept as rejected (read on the loop: no store access)."""
        self.rejected += n
        self.metrics.rejected_messages.set(self.rejected)

    def rate_ok(self, client: str) -> bool:
        assert self._bucket is not None
        return self._bucket.take(client)

    def authdb(self) -> auth.AuthDB | None:
        """The auth file, re-read when it changed (so ``token add`` needs no restart)."""
        path: Path | None = self.cfg.auth_file
        if path is None:
            return None
        try:
            mtime = path.stat().st_mtime
        except OSError:
            mtime = 0.0
        if self._auth is None or mtime != self._auth_mtime:
            self._auth = auth.load(path)
            self._auth_mtime = mtime
        return self._auth

    def identify(self, request: web.Request) -> auth.Identity:
        """Who is asking; AuthError (401) for a bad or unknown token."""
        token = auth.token_from_request(
            request.headers.get("Authorization"), request.query.get("auth")
        )
        db = self.authdb()
        if db is None:
            return auth.ANONYMOUS_OPEN
        return db.identify(token)

    def require(self, ident: auth.Identity, mode: auth.Mode, topic: str) -> None:
        """401 for anonymous without the grant, 403 for a token without it."""
        if ident.grant.allows(mode, topic):
            return
        if ident.name == "anonymous":
            raise AuthError(f"{mode} access to topic {topic!r} needs a token")
        raise Forbidden(f"token {ident.name!r} may not {mode} topic {topic!r}")

    async def to_thread(self, fn: Any, *args: Any, **kw: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kw)
