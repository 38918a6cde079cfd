"""Open streams against a changed auth file: which ones the new file no longer allows.

A stream is authorised once, when it opens; without this a revoked token kept receiving on
every WebSocket, SSE and JSON stream it already had. The relay re-reads the auth file when it
changes (``RelayState.authdb``: on a request, or the watcher's poll every second) and hands
each new valid version to ``Streams.recheck``, which ends each stream whose token is gone or
may no longer read one of its topics. Pure: no sockets, no asyncio; ending a stream is the
callback the stream registered (``edge_relay.streams``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from edge_relay.auth import AuthDB

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class OpenStream:
    """One open subscription: whose token it runs on and what it reads."""

    digest: str
    """The token's SHA-256 ("" for anonymous): a token revoked and re-added under the same
    name is another token, so the name alone cannot say it is still the same grant."""
    name: str
    topics: tuple[str, ...]
    end: Callable[[str], None]
    """Ends the stream with a reason (a WebSocket closes with 1008 and it; SSE/JSON end)."""


def withdrawn(db: AuthDB, stream: OpenStream) -> str | None:
    """Why ``db`` no longer allows ``stream`` (a short reason for a close frame), or None."""
    ident = db.by_digest(stream.digest)
    if ident is None:
        return "token revoked"
    for topic in stream.topics:
        if not ident.grant.allows("read", topic):
            return f"read access to {topic!r} withdrawn"  # a topic is at most 64 ASCII chars
    return None


class Streams:
    """The registry of open streams the auth watcher re-checks."""

    def __init__(self) -> None:
        self._open: set[OpenStream] = set()

    def __len__(self) -> int:
        return len(self._open)

    def add(self, stream: OpenStream) -> None:
        self._open.add(stream)

    def remove(self, stream: OpenStream) -> None:
        self._open.discard(stream)

    def by_name(self) -> dict[str, tuple[int, dict[str, int]]]:
        """Per token name: its open streams, and how many of them read each topic."""
        out: dict[str, tuple[int, dict[str, int]]] = {}
        for stream in self._open:
            n, topics = out.get(stream.name, (0, {}))
            for topic in stream.topics:
                topics[topic] = topics.get(topic, 0) + 1
            out[stream.name] = (n + 1, topics)
        return out

    def recheck(self, db: AuthDB) -> int:
        """End every stream ``db`` no longer allows; returns how many were ended."""
        ended: list[tuple[OpenStream, str]] = []
        for stream in self._open:
            reason = withdrawn(db, stream)
            if reason is not None:
                ended.append((stream, reason))
        for stream, reason in ended:
            self._open.discard(stream)
            log.info("closing a stream of %r (%s): %s", stream.name, ",".join(stream.topics),
                     reason)  # fmt: skip
            stream.end(reason)
        return len(ended)
