"""Subscribe endpoints: ``GET /<topics>/json|sse|raw|ws`` with ``since=``, ``poll=1`` and filters.

One handler serves the three formats; a small sink per format writes events. The order of
operations is what makes the replay/live seam exact (see ``edge_relay.hub``): register the
live subscriber, send ``open``, replay from the store, then forward live messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from agent.envelope import dumps, new_id
from agent.ntfyproto import fields
from agent.ntfyproto.fields import Param, Request
from agent.ntfyproto.since import parse_since
from agent.states import STATE_EVENT
from agent.store import Stored
from agent.timeparse import Since
from edge_relay.auth import Identity
from edge_relay.core import ACTION_EVENTS, Filters, event_of, parse_topic_list
from edge_relay.deflate import Deflater
from edge_relay.live import Framed, Live, LiveState, Subscriber, text_frame
from edge_relay.replay import replay, replay_scheduled, replay_states
from edge_relay.revoke import OpenStream
from edge_relay.state import RelayState

_DIRECT_BUFFER = 1024 * 1024  # bytes waiting in a WebSocket's transport before it is "slow"
_DRAIN_AT = 64 * 1024  # aiohttp's writer limit: past it a deflate stream waits for the drain
COMPRESS_MIN = 128
"""Bytes below which a WebSocket frame goes uncompressed on a permessage-deflate connection:
``open``, ``keepalive`` and the tiniest messages, where deflate saves a few bytes for a
compressor call each (RFC 7692 lets any message go uncompressed: RSV1 clear)."""
log = logging.getLogger(__name__)


def event(kind: str, topics: str, **extra: Any) -> dict[str, Any]:
    """An ntfy control event (``open``, ``keepalive``)."""
    return {"id": new_id(), "time": int(time.time()), "event": kind, "topic": topics, **extra}


_CONTENT_TYPES = {"json": "application/x-ndjson", "sse": "text/event-stream", "raw": "text/plain"}


def accepts_gzip(header: str) -> bool:
    """True when an ``Accept-Encoding`` value takes gzip (RFC 9110 12.5.3: ``gzip`` or
    ``x-gzip`` with a q-value above 0)."""
    for part in header.split(","):
        name, _, params = part.partition(";")
        if name.strip().lower() not in ("gzip", "x-gzip"):
            continue
        q = params.strip().lower()
        if not q.startswith("q="):
            return True
        try:
            return float(q[2:]) > 0
        except ValueError:
            return False
    return False


class Sink:
    """Writes events to one HTTP stream (``json``, ``sse``, ``raw``).

    gzip (``compress = true`` and a request that accepts it): the answer is one gzip stream.
    A live stream is flushed (``Z_SYNC_FLUSH``) after every event so it arrives at once; a
    ``poll=1`` answer, which ends, is flushed only at its end (better compression). aiohttp's
    own ``enable_compression`` is not used: it never flushes before the end, so a live
    stream's events would wait in zlib."""

    def __init__(
        self, request: web.Request, fmt: str, *, compress: bool = False, live: bool = True
    ) -> None:
        self.request = request
        self.fmt = fmt
        self.body: asyncio.Task[None] | None = None
        self.ended: str | None = None
        """Why the auth file no longer allows this stream (``end``), or None."""
        ctype = _CONTENT_TYPES.get(fmt, "application/json")  # ws: replaced by its own response
        headers = {"Content-Type": f"{ctype}; charset=utf-8", "Cache-Control": "no-cache"}
        self._gzip: Any = None
        self._live = live
        if compress:
            headers["Vary"] = "Accept-Encoding"
            if accepts_gzip(request.headers.get("Accept-Encoding", "")):
                self._gzip = zlib.compressobj(6, zlib.DEFLATED, 31)
                headers["Content-Encoding"] = "gzip"
        self.response: web.StreamResponse = web.StreamResponse(headers=headers)

    async def prepare(self) -> None:
        await self.response.prepare(self.request)

    async def write(self, data: bytes) -> None:
        z = self._gzip
        if z is not None:
            data = z.compress(data) + (z.flush(zlib.Z_SYNC_FLUSH) if self._live else b"")
            if not data:
                return
        await self.response.write(data)

    async def finish(self) -> None:
        """The end of the answer: the gzip stream's last block and trailer."""
        if self._gzip is not None:
            z, self._gzip = self._gzip, None
            await self.response.write(z.flush())

    async def send(self, ev: dict[str, Any]) -> None:
        """A control event (``open``, ``keepalive``)."""
        await self.send_text(ev["event"], ev["id"], dumps(ev))

    async def send_message(self, item: Stored, data: str) -> None:
        """A message; ``data`` is its event (``live.wire``) as JSON text."""
        await self.send_text(event_of(item.message), item.message.id, data)

    async def send_lives(self, items: Sequence[Live]) -> None:
        """Replayed messages, in order (``edge_relay.replay``), each encoded once already."""
        for item in items:
            await self.send_message(item.stored, item.text)

    async def send_state(self, item: LiveState) -> None:
        """A synced state (``message_state``): ntfy's clients skip an event they do not
        know (SSE: a named event nobody listens to; JSON/WebSocket: an unknown ``event``)."""
        await self.send_text(STATE_EVENT, item.id, item.text)

    async def send_text(self, kind: str, event_id: str, data: str) -> None:
        """An event already encoded as JSON text."""
        if self.fmt == "json":
            await self.write(data.encode() + b"\n")
        elif kind in ("message", *ACTION_EVENTS):  # ntfy: no ``event:`` line for these
            await self.write(f"id: {event_id}\ndata: {data}\n\n".encode())
        else:
            await self.write(f"event: {kind}\ndata: {data}\n\n".encode())

    def abort(self) -> None:
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    async def run(self, body: asyncio.Task[None]) -> None:
        await body

    def end(self, reason: str) -> None:
        """End the stream: its token was revoked or its grant narrowed (edge_relay.revoke).
        An SSE/JSON response then ends normally; a WebSocket closes with 1008 and ``reason``."""
        self.ended = reason
        if self.body is not None:
            self.body.cancel()

    def direct(self) -> Callable[[Sequence[Framed]], bool] | None:
        """A synchronous writer for live messages, if this sink has one."""
        return None


class RawSink(Sink):
    """ntfy's ``/raw`` stream (``handleSubscribeRaw``): a message event is its text on one
    line (newlines in it become spaces); every other event (``open``, ``keepalive``) is an
    empty line."""

    def __init__(self, request: web.Request, *, compress: bool = False, live: bool = True) -> None:
        super().__init__(request, "raw", compress=compress, live=live)

    async def send_message(self, item: Stored, data: str) -> None:
        if event_of(item.message) != "message":
            await self.write(b"\n")  # ntfy: only message events carry text
            return
        await self.write(item.message.message.replace("\n", " ").encode() + b"\n")

    async def send_text(self, kind: str, event_id: str, data: str) -> None:
        await self.write(b"\n")

    async def send_state(self, item: LiveState) -> None:
        return None  # a raw stream is message text only: a state is not a line of it


class WsSink(Sink):
    """Writes events as WebSocket text frames; reads (and ignores) what the client sends."""

    def __init__(self, request: web.Request, *, compress: bool = False) -> None:
        super().__init__(request, "ws")
        # permessage-deflate only when the client offers it (the agent does; ntfy's clients
        # may not): an uncompressed connection keeps the pre-built frames' fast path below.
        self.ws = web.WebSocketResponse(heartbeat=None, max_msg_size=64 * 1024, compress=compress)
        self.response = self.ws
        self._deflater: Deflater | None = None

    async def prepare(self) -> None:
        await super().prepare()
        if self.ws.compress:  # negotiated: this connection's messages are deflated here
            ext = self.ws.headers.get("Sec-WebSocket-Extensions", "")
            notakeover = "server_no_context_takeover" in ext
            self._deflater = Deflater(int(self.ws.compress), no_context_takeover=notakeover)

    @property
    def compressed(self) -> bool:
        """permessage-deflate was negotiated (known once prepared)."""
        return bool(self.ws.compress)

    async def send_text(self, kind: str, event_id: str, data: str) -> None:
        deflater = self._deflater
        if deflater is None:
            await self.ws.send_str(data)
            return
        raw = data.encode()
        # every compressed frame through this connection's one Deflater (edge_relay.deflate)
        await self._write(text_frame(raw) if len(raw) < COMPRESS_MIN else deflater.frame(raw))

    async def send_lives(self, items: Sequence[Live]) -> None:
        # The frames send_text would write one by one (the pre-built one, or deflated through
        # this connection's Deflater in order), in writes of ~64 KiB instead of one each, and
        # drained as one send_text would be: fewer syscalls (the CPU saving is the cache's:
        # docs/PERFORMANCE.md, "Edge latency").
        deflater = self._deflater
        chunk: list[bytes] = []
        size = 0
        for item in items:
            if deflater is None:
                frame = item.frame
            else:
                raw = item.text.encode()
                frame = item.frame if len(raw) < COMPRESS_MIN else deflater.frame(raw)
            chunk.append(frame)
            size += len(frame)
            if size >= _DRAIN_AT:
                await self._write(b"".join(chunk))
                chunk, size = [], 0
        if chunk:
            await self._write(b"".join(chunk))

    async def _write(self, frame: bytes) -> None:
        """Write a frame; past aiohttp's high-water mark, wait for the drain as its writer
        does (a slow reader holds up this stream only; the hub's queue bounds the rest)."""
        transport = self.request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the WebSocket is closed")
        transport.write(frame)
        if transport.get_write_buffer_size() > _DRAIN_AT:
            protocol: Any = self.request.protocol
            if getattr(protocol, "_paused", False):
                await protocol._drain_helper()

    def direct(self) -> Callable[[Sequence[Framed]], bool] | None:
        transport = self.request.transport
        if transport is None or self.compressed:
            # Live.frame is uncompressed: on a deflate connection every message goes through
            # send_text (compressed by its Deflater), never as the pre-built frame.
            return None

        def push(items: Sequence[Framed]) -> bool:
            if transport.is_closing():
                return True  # the reader side ends this subscription
            if transport.get_write_buffer_size() > _DIRECT_BUFFER:
                return False
            transport.write(items[0].frame if len(items) == 1 else b"".join(i.frame for i in items))
            return True

        return push

    async def run(self, body: asyncio.Task[None]) -> None:
        # The client's frames are read in this task (the handler's), not in one of their own,
        # and without asyncio.wait: 1.6 KiB less per open WebSocket (bench/relay_memory.py).
        # Whoever ends first ends both: the client (the reading ends), the handler being
        # cancelled, or the body (overflow, failure), which cancels the reading here.
        handler = asyncio.current_task()
        assert handler is not None
        closing = False

        def body_ended(_: object) -> None:
            if not closing:
                handler.cancel()

        body.add_done_callback(body_ended)
        try:
            await self._drain()
        except asyncio.CancelledError:
            if not body.done():
                raise  # from outside: the client is gone or the relay is stopping
            handler.uncancel()  # our own, from body_ended: the stream is over
        except Exception as exc:  # as when the reader was a task: logged, the stream ends
            if not isinstance(exc, ConnectionError):
                log.error("WebSocket stream failed", exc_info=exc)
        finally:
            closing = True
            body.cancel()
            for result in await asyncio.gather(body, return_exceptions=True):
                if isinstance(result, Exception) and not isinstance(result, ConnectionError):
                    log.error("WebSocket stream failed", exc_info=result)
            with contextlib.suppress(ConnectionError):
                if self.ended is None:
                    await self.ws.close()
                else:  # 1008: policy violation (RFC 6455 7.4.1), as ntfy's clients expect
                    await self.ws.close(code=1008, message=self.ended.encode()[:123])
            _forget(self.ws.exception())

    async def _drain(self) -> None:
        async for _ in self.ws:
            pass  # ntfy's WebSocket is one-way; client frames are ignored


def _forget(failure: BaseException | None) -> None:
    """Drop the frames an error that aiohttp keeps on a closed WebSocket points to.

    When the client is gone, close() fails to write the close frame and the response keeps
    that error; its traceback and ``__context__`` (the CancelledError that ended the stream)
    hold frames whose locals point back at the response: a reference cycle per connection
    (~117 objects) that only a full GC pass freed, 230-385 ms after 1,000 clients left.
    """
    if failure is not None:
        failure.__traceback__ = None
        failure.__context__ = None


def param(request: web.Request, field: Param) -> str:
    """One of ntfy's parameters of ``request``, read as ntfyproto reads them all
    (``fields.Request.read``: headers, RFC 2047 decoded, before the query); "" when unset."""
    return Request(request.headers.items(), request.query).read(field)


def parse_request(
    request: web.Request, state: RelayState
) -> tuple[tuple[str, ...], Since | None, bool, Filters]:
    """Topics, since, poll and filters from a subscribe request; MessageError for bad ones.

    Each parameter has ntfy's names (``parseSubscribeParams``): ``X-Poll``/``poll``/``po``,
    ``X-Since``/``since``/``si``, and the filters ``X-ID``/``id``, ``X-Message``/
    ``message``/``m``, ``X-Title``/``title``/``t``, ``X-Priority``/``priority``/``prio``/``p``,
    ``X-Tags``/``tags``/``tag``/``ta``. ``since=none`` (and no ``since`` without ``poll``)
    replays nothing: returned as None.
    """
    topics = parse_topic_list(
        request.match_info["topics"], limit=state.cfg.limits.max_topics_per_subscription
    )
    q = request.query
    parts = Request(request.headers.items(), q, max_value=state.cfg.limits.message_size)
    poll = parts.read_bool(fields.POLL, False)
    # ntfy's since= rule: none/empty → nothing, since=30 a unix time, garbage → 40008
    # An id the relay stores but ntfy's id rule does not know (a publisher's own) resumes
    # too: one indexed lookup on the loop, only for such a value.
    since = parse_since(parts.read(fields.SINCE), poll=poll, now=time.time(),
                        known_id=lambda i: state.store.seq_of(i) is not None)  # fmt: skip
    filters = Filters.parse(
        parts.read(fields.PRIORITY),
        parts.read(fields.TAGS),
        id=parts.read(fields.FILTER_ID),
        message=parts.read(fields.MESSAGE),
        title=parts.read(fields.TITLE),
    )
    return topics, since, poll, filters


async def subscribe(request: web.Request) -> web.StreamResponse:
    """``GET /<t1>,<t2>/json|sse|raw|ws``."""
    state: RelayState = request.app["state"]
    fmt = request.match_info["fmt"]
    if fmt == "ws" and request.headers.get("Upgrade", "").lower() != "websocket":
        raise web.HTTPBadRequest(
            text=dumps({"code": 40016, "http": 400,
                        "error": "invalid request: client not using the websocket protocol",
                        "link": "https://ntfy.sh/docs/subscribe/api/#websockets"}),
            content_type="application/json",
        )  # fmt: skip
    topics, since, poll, filters = parse_request(request, state)
    ident = state.identify(request)
    for topic in topics:
        state.require(ident, "read", topic)
    client = request.remote or "?"
    if state.subs_per_client[client] >= state.cfg.limits.max_subscriptions:
        raise web.HTTPTooManyRequests(
            text=dumps({"code": 42903, "http": 429,  # ntfy's code for this limit
                        "error": f"too many subscriptions from this client "
                                 f"(limit {state.cfg.limits.max_subscriptions})",
                        "link": "https://ntfy.sh/docs/publish/#limitations"}),
            content_type="application/json",
        )  # fmt: skip
    compress = state.cfg.compress
    sink: Sink = (
        WsSink(request, compress=compress)
        if fmt == "ws"
        else RawSink(request, compress=compress, live=not poll)
        if fmt == "raw"
        else Sink(request, fmt, compress=compress, live=not poll)
    )

    def overflow() -> None:
        state.metrics.dropped.inc()
        sink.abort()

    sub = Subscriber(topics, filters, queue_size=state.cfg.limits.send_queue,
                     on_overflow=overflow, owner=ident.name)  # fmt: skip
    state.hub.subscribe(sub)  # live first, then replay: see the hub's theory of operation
    opened = _watch(state, ident, sub, sink)
    state.subs_per_client[client] += 1
    state.metrics.subscribers.inc()
    try:
        await sink.prepare()
        body = asyncio.ensure_future(
            _stream(state, sink, sub, ",".join(topics), since, poll, _scheduled(request, state))
        )
        sink.body = body
        if sink.ended is not None:
            body.cancel()
        await sink.run(body)
        await sink.finish()
    except (ConnectionError, asyncio.CancelledError):
        pass  # the client went away (or was cut for being slow): nothing to clean but below
    finally:
        state.streams.remove(opened)
        state.hub.unsubscribe(sub)
        state.subs_per_client[client] -= 1
        if state.subs_per_client[client] <= 0:
            del state.subs_per_client[client]
        state.metrics.subscribers.dec()
    return sink.response


def _watch(state: RelayState, ident: Identity, sub: Subscriber, sink: Sink) -> OpenStream:
    """Register the stream with the auth watcher (``edge_relay.revoke``), which ends it if a
    changed auth file no longer allows it. Called with no ``await`` since the grant was
    checked, so no change of the file can slip in between."""

    def withdraw(reason: str) -> None:
        sub.dead = True  # from now on fan-out writes nothing to it, not even directly
        sink.end(reason)

    opened = OpenStream(ident.digest, ident.name, tuple(sorted(sub.topics)), withdraw)
    state.streams.add(opened)
    return opened


def _scheduled(request: web.Request, state: RelayState) -> bool:
    """ntfy's ``X-Scheduled``/``scheduled``/``sched``: the replay includes messages not yet
    due (without it they are invisible until their time)."""
    parts = Request(request.headers.items(), request.query, max_value=64)
    return parts.read_bool(fields.SCHEDULED, False)


async def _stream(
    state: RelayState,
    sink: Sink,
    sub: Subscriber,
    topics: str,
    since: Since | None,
    poll: bool,
    scheduled: bool = False,
) -> None:
    if not poll:
        await sink.send(event("open", topics))
    if since is not None:
        await replay(state, sink, sub, since)
        if scheduled and since.kind != "latest":
            await replay_scheduled(state, sink, sub)
        if not poll:  # a poll is a fetch of messages: ntfy's clients list what it returns
            await replay_states(state, sink, sub, since)
    if poll:
        return
    keepalive = state.cfg.keepalive
    direct = sink.direct()
    while not sub.dead:
        if direct is not None and sub.queue.empty():
            sub.direct = direct  # caught up: fan-out writes to this socket itself from now on
        item = await sub.next(keepalive)
        if sub.dead:
            break
        if item is None:
            await sink.send(event("keepalive", topics))
        elif isinstance(item, LiveState):
            await sink.send_state(item)
        else:
            await sink.send_message(item.stored, item.text)
            state.metrics.delivered.inc()
