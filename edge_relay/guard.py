"""The relay's HTTP connections under abuse: header timeout, connection cap, protocol errors.

Theory of operation
-------------------
aiohttp closes a keep-alive connection that waits too long for its next request
(``keepalive_timeout``, our ``limits.idle_timeout``) and never times out a handler, so a
subscriber stream lives as long as its client (the exemption the issue asks for). It has no
header timeout, no connection cap, and it answers a malformed request in plain text with an
ERROR traceback per request. This module adds those, with the least reach into aiohttp:

* ``GuardedHandler`` subclasses aiohttp's public ``web.RequestHandler`` (the asyncio protocol
  of one connection) and overrides only protocol callbacks (``connection_made``,
  ``data_received``, ``connection_lost``) and the documented ``handle_error`` hook; the
  service creates the listening socket itself with ``loop.create_server(gate.factory, ...)``
  instead of ``web.TCPSite``, over the same ``AppRunner.server`` (so aiohttp still tracks and
  shuts down every connection). No private attribute of aiohttp is read or written.
* **Header timeout.** A timer starts when a connection is accepted and when the first byte of
  a request arrives on an idle connection; the ``track`` middleware stops it when a request
  reaches the application (its headers are in). If it fires first, the relay answers 408 in
  ntfy's JSON shape and closes: a silent or half-sent connection is gone after
  ``limits.header_timeout``. (Bytes pipelined behind a request still in progress start no
  timer; the idle timeout bounds those.) Body time is bounded where bodies are read
  (``server._read_body``: 408 after ``limits.body_timeout``).
* **Connection cap.** ``Gate`` counts open connections; beyond ``limits.max_connections``, or
  what the process's file-descriptor limit allows with a reserve for the store and the event
  loop (the soft limit is raised towards the hard one at start, ``raise_fd_limit``: a login
  shell's 1,024 would cap a default relay at ~800), a new connection gets a canned 503 and
  is closed at once, before it costs a parser.
  The listen backlog (also how many sockets asyncio accepts per loop tick) is sized to the
  free descriptors too (``fd_budget``), so refusing a burst cannot itself run out of them.
  The refusal is logged at most once a minute, with how many were refused since. When
  ``accept()`` itself fails for want of descriptors, asyncio's once-a-second traceback is
  replaced by the same once-a-minute WARNING (``Gate.loop_exception``).
* **Protocol errors** (malformed request line, bad header, a header above 16 KiB): answered in
  ntfy's JSON error shape (413 for a header too long, 414 for a request line too long, else
  400), logged at WARNING without a traceback at most once per peer per minute. The text is
  ours, never the parser's, which quotes the raw line (and with it a ``?auth=`` token).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidURLError,
    LineTooLong,
)

from agent.envelope import dumps
from edge_relay.config import Limits

log = logging.getLogger(__name__)
MAX_LINE = 128 * 1024  # a request line of 10,000 comma-joined topics reaches the handler
MAX_FIELD = 16 * 1024
_FD_RESERVE = 16  # descriptors kept for the store and the loop beyond those open at start
_WINDOW = 60.0  # seconds: at most one log line per kind (or per peer) in this window
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def canned(status: int, reason: str, text: str) -> bytes:
    """A complete HTTP/1.1 response in ntfy's JSON error shape that closes the connection."""
    body = dumps({"code": status * 100 + 1, "http": status, "error": text}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")  # fmt: skip
    return head.encode() + body


class Throttle:
    """Says yes at most once per key per window; counts the noes in between."""

    def __init__(self, window: float = _WINDOW) -> None:
        self.window = window
        self._last: dict[str, tuple[float, int]] = {}

    def allow(self, key: str, now: float | None = None) -> int | None:
        """The number suppressed since the last yes, or None to stay quiet."""
        now = time.monotonic() if now is None else now
        last, quiet = self._last.get(key, (-self.window, 0))
        if now - last < self.window:
            self._last[key] = (last, quiet + 1)
            return None
        if len(self._last) > 10_000:  # bound memory under a flood of peers
            self._last = {k: v for k, v in self._last.items() if now - v[0] < self.window}
        self._last[key] = (now, 0)
        return quiet


def raise_fd_limit(connections: int) -> int:
    """Raise the soft file-descriptor limit towards the hard one, as far as ``connections``
    need (with the reserve and the refused bursts ``fd_budget`` keeps), and return it.

    A login shell's soft limit is 1,024 on Debian and Raspberry Pi OS, with a hard limit of
    tens of thousands: the soft one is there for programs that use ``select()``, which
    asyncio does not (epoll), and a server is meant to raise it itself. Only the hard limit
    (``ulimit -Hn``, systemd's ``LimitNOFILE=``) then caps the relay.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + _FD_RESERVE + 3 * 128 + 64  # + what is open at start
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if new > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        except (OSError, ValueError):
            return soft
        log.debug("file-descriptor limit raised from %d to %d (hard limit %s)", soft, new, hard)
        return new
    return soft


def fd_budget() -> tuple[int, int]:
    """(connections, accepts per loop tick) that the file-descriptor limit leaves room for.

    asyncio accepts up to ``backlog`` sockets per loop tick and a refused one holds its
    descriptor until a later tick closes it, so two or three bursts can be open at once
    beyond the connections kept: the burst is sized to the free descriptors and three of
    them are held back, with a reserve for the store (its WAL and shm files open on the
    first write) and the loop.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 30, 128
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:
        used = 64
    free = soft - used
    burst = max(4, min(128, free // 16))
    return max(1, free - _FD_RESERVE - 3 * burst), burst


class Gate:
    """What every connection of one listening socket shares: the limits, the open count and
    the log throttles. ``factory`` is the protocol factory for ``loop.create_server``."""

    def __init__(self, limits: Limits, server: web.Server, **handler_kw: Any) -> None:
        self.limits = limits
        self.server = server
        self.handler_kw = handler_kw
        raise_fd_limit(limits.max_connections)
        allowed, self.backlog = fd_budget()
        self.max_connections = min(limits.max_connections, allowed)
        if self.max_connections < limits.max_connections:
            log.warning("limits.max_connections = %d is more than the file-descriptor limit "
                        "leaves room for: at most %d connections (raise the hard limit: "
                        "`ulimit -Hn`, or LimitNOFILE= in the systemd unit)",
                        limits.max_connections, self.max_connections)  # fmt: skip
        self.open = 0
        self.refused = 0
        self._throttle = Throttle()

    def factory(self) -> GuardedHandler:
        return GuardedHandler(self, self.server, loop=asyncio.get_running_loop(),
                              **self.handler_kw)  # fmt: skip

    def admit(self) -> bool:
        if self.open >= self.max_connections:
            self.refused += 1
            quiet = self._throttle.allow("refused")
            if quiet is not None:
                log.warning("refusing new connections: %d open, the limit is %d "
                            "(limits.max_connections or the file-descriptor limit); "
                            "%d more refused since the last such line",
                            self.open, self.max_connections, quiet)  # fmt: skip
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1

    def protocol_error(self, peer: str, status: int, text: str) -> None:
        quiet = self._throttle.allow(f"peer:{peer}")
        if quiet is not None:
            more = f" ({quiet} more from this peer in the last minute)" if quiet else ""
            log.warning("malformed HTTP request from %s: %s -> %d%s", peer, text, status, more)

    def loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The loop's exception handler: ``accept()`` out of descriptors is one WARNING a
        minute (asyncio retries it every second, each time with a traceback)."""
        exc = context.get("exception")
        if isinstance(exc, ValueError) and "_start_serving" in repr(context.get("handle")):
            # asyncio's accept retry (after EMFILE) firing once the server was closed
            log.debug("accept retry after the listener closed: %s", exc)
            return
        if isinstance(exc, OSError) and "accept" in str(context.get("message", "")):
            quiet = self._throttle.allow("accept")
            if quiet is not None:
                log.warning("cannot accept connections: %s (%d open; %d more such failures "
                            "since the last line)", exc.strerror, self.open, quiet)  # fmt: skip
            return
        loop.default_exception_handler(context)


class GuardedHandler(web.RequestHandler):
    """aiohttp's connection protocol with a header timer, the connection cap and JSON
    protocol errors (see the module docstring)."""

    __slots__ = ("_admitted", "_busy", "_gate", "_timer")

    def __init__(self, gate: Gate, manager: web.Server, **kw: Any) -> None:
        super().__init__(manager, **kw)
        self._gate = gate
        self._admitted = False
        self._busy = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._gate.admit():
            assert isinstance(transport, asyncio.Transport)
            transport.write(canned(503, "Service Unavailable", "too many connections; retry"))
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        if not self._busy and self._timer is None:
            self._arm()  # the first byte of a request: its headers are due within the timeout
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._gate.release()
        self._disarm()
        super().connection_lost(exc)

    def begin(self) -> None:
        """A request reached the application: its headers arrived in time."""
        self._busy = True
        self._disarm()

    def end(self) -> None:
        self._busy = False

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._gate.limits.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        transport = self.transport
        if self._busy or transport is None:
            return
        if isinstance(transport, asyncio.WriteTransport) and transport.get_write_buffer_size():
            self._arm()  # still writing the last response to a slow reader: not idle
            return
        limit = self._gate.limits.header_timeout
        transport.write(canned(408, "Request Timeout",
                               f"no complete request headers within {limit:g} s"))  # fmt: skip
        self.force_close()

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's hook for a request it could not parse (and for 500s it raised itself)."""
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        status, text = describe(exc)
        self._gate.protocol_error(str(request.remote or "?"), status, text)
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already sent; cannot send the error")
        resp = web.Response(status=status, content_type="application/json",
                            text=dumps({"code": status * 100 + 1, "http": status,
                                        "error": text}))  # fmt: skip
        resp.force_close()
        return resp

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp's log of what escaped a request; a body that failed as aiohttp drained
        the unread rest of it (after an early answer: 401, 413, a 400 for that body) is the
        client's mistake, not ours: one quiet line per peer a minute, no traceback. Such a
        body does not inflate (``Content-Encoding``) or its chunked framing is broken."""
        exc = kw.get("exc_info")
        if not isinstance(exc, web.RequestPayloadError):
            super().log_exception(*args, **kw)
            return
        peer = self.transport.get_extra_info("peername") if self.transport else None
        why = "does not inflate" if "content-encoding" in str(exc).lower() else "is broken"
        self._gate.protocol_error(str(peer[0] if peer else "?"), 400,
                                  f"the unread rest of a request body {why}")  # fmt: skip


def describe(exc: HttpProcessingError) -> tuple[int, str]:
    """Status and our own words for a parser error (never the parser's: it quotes the line)."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else "?"
        if limit == MAX_FIELD:
            return 413, f"a request header is above the limit of {MAX_FIELD} bytes"
        return 414, f"the request line is above the limit of {limit} bytes"
    if isinstance(exc, BadHttpMethod):
        return 400, "not an HTTP request (bad method)"
    if isinstance(exc, BadStatusLine):
        return 400, "malformed request line"
    if isinstance(exc, InvalidURLError):
        return 400, "malformed request target"
    return 400, f"malformed HTTP request ({type(exc).__name__})"


@web.middleware
async def track(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Tell the connection's guard a request is in (stops its header timer) and when the
    application is done with it."""
    proto = request.protocol
    if not isinstance(proto, GuardedHandler):
        return await handler(request)
    proto.begin()
    try:
        return await handler(request)
    finally:
        proto.end()
