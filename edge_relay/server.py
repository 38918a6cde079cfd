"""The relay's HTTP API (aiohttp): publish, the ``/v1/`` extensions, metrics, and routing.

Every error a client can cause is a 4xx with ntfy's JSON error shape
(``{"code": 40007, "http": 400, "error": "...", "link": "..."}``) naming the problem; it is
logged and the server keeps serving everyone else. The publish handlers only read the request
(body within its limit and timeout, auth, rate) and hand its parts to ``agent.ntfyproto``,
which holds ntfy's rules.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent import __version__
from agent.envelope import Message, dumps, encode, from_fields
from agent.errors import AuthError, InvalidState, MessageError, StoreBusy, StoreError
from agent.ntfyproto import NtfyError, fields, templates
from agent.ntfyproto.delay import parse_delay
from agent.ntfyproto.errors import CODES
from agent.ntfyproto.fields import Request
from agent.ntfyproto.publish import (
    TOPIC,
    Publish,
    body_is_file,
    check_sequence_id,
    parse_json_publish,
    parse_publish,
)
from edge_relay import acks, admin, deflate, files, gzipfile, ntfy_api, receipts
from edge_relay.attachments import DiskFull
from edge_relay.core import check_relay_topic, rate_key
from edge_relay.guard import Throttle, track
from edge_relay.live import event_json
from edge_relay.renders import Renders
from edge_relay.state import Forbidden, RelayState
from edge_relay.streams import subscribe
from edge_relay.web import routes as web_routes

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_REFUSALS = Throttle()


def error(status: int, text: str, code: int | None = None, link: str | None = None) -> web.Response:
    """ntfy's error shape, ``link`` included where ntfy's error of that code has one.

    Without a code: ``40000`` (ntfy's "invalid request") for a 400, else ``status*100+1``
    (40101, 40301, 40401, 41301, 50001: ntfy's numbers for the same statuses).
    """
    code = code or (40000 if status == 400 else status * 100 + 1)
    body: dict[str, Any] = {"code": code, "http": status, "error": text}
    known = CODES.get(code)
    link = link or (known[2] if known is not None and known[0] == status else None)
    link = link or ntfy_api.status_link(status)
    if link:
        body["link"] = link
    return web.json_response(body, status=status, dumps=dumps)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map edgepush errors to 4xx/5xx JSON; a client's mistake never escapes as a 500."""
    state: RelayState = request.app["state"]
    raw = request.raw_path.split("?", 1)[0]
    try:
        if "/." in raw or "%00" in raw.lower() or "%2e" in raw.lower() or "%2f" in raw.lower():
            raise MessageError(f"path {raw[:80]!r} holds '.', '/' or NUL inside a name", "path")
        return await handler(request)
    except NtfyError as exc:
        answer = web.json_response(exc.body(), status=exc.http, dumps=dumps)
    except MessageError as exc:
        status = 413 if "above the limit" in str(exc) else 400
        answer = error(status, str(exc), *ntfy_api.message_error_code(status, exc))
    except AuthError as exc:
        answer = error(401, str(exc))
    except Forbidden as exc:
        answer = error(403, str(exc))
    except StoreBusy as exc:
        if "disk is full" in str(exc):  # SQLITE_FULL passes too (a pruner, a freed file)
            quiet = _REFUSALS.allow("store-full")
            if quiet is not None:
                log.error("store: the disk is full, publishes refused (%d more since): %s",
                          quiet, exc)  # fmt: skip
            return error(503, "the relay's disk is full: the message was not stored; retry later")
        log.warning("store busy: %s", exc)
        return error(503, "the relay's store is busy; retry")
    except StoreError as exc:
        log.error("store error: %s", exc)
        return error(503, "the relay's store is unavailable")
    except web.HTTPException as exc:
        if exc.content_type == "application/json":
            return exc
        answer = error(exc.status, exc.text or exc.reason)
    except web.RequestPayloadError as exc:
        answer = _unreadable_body(request, exc)
    except (ConnectionError, InvalidState) as exc:
        if isinstance(exc, ConnectionError):
            raise  # the client went away: nothing to answer
        log.error("%s %s: %s", request.method, raw[:120], exc)
        return error(500, "internal error; see the relay's log")
    except Exception:
        log.exception("%s %s: unexpected error", request.method, raw[:120])
        return error(500, "internal error; see the relay's log")
    state.metrics.rejected.inc()
    # one line per client a minute: a client sending garbage in a loop is not a log flood
    quiet = _REFUSALS.allow(request.remote or "?")
    if quiet is not None:
        more = f" (+{quiet} refused from {request.remote} since the last line)" if quiet else ""
        log.info("%s %s -> %s: %s%s", request.method, raw[:120], answer.status, answer.text, more)
    return answer


def _unreadable_body(request: web.Request, exc: web.RequestPayloadError) -> web.Response:
    """A body aiohttp could not read: one whose ``Content-Encoding`` does not inflate (aiohttp
    inflates gzip and deflate bodies as they arrive), or broken chunked framing. 400 naming
    which, and the connection closed: the rest of that body is not worth reading (aiohttp's
    drain of it fails the same way: ``guard.GuardedHandler.log_exception``)."""
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "")
    if "content-encoding" in str(exc).lower():
        text = f"the body is not valid {encoding[:40]!r} data (Content-Encoding)"
    else:
        text = "the body could not be read: its framing is broken (Transfer-Encoding)"
    answer = error(400, text)
    answer.force_close()
    return answer


def _parts(request: web.Request) -> Request:
    """The request as ntfyproto reads it: headers, query, each value bounded by
    ``limits.message_size`` (413 above it, whichever way the text came in)."""
    limit = request.app["state"].cfg.limits.message_size
    return Request(request.headers.items(), request.query, max_value=limit)


async def _read_body(request: web.Request, limit: int, code: int = 41301) -> bytes:
    """The body, at most ``limit`` bytes (413, ntfy's ``code``), within
    ``limits.body_timeout`` s (408)."""
    if request.content_length is not None and request.content_length > limit:
        raise NtfyError(
            code, f"body is {request.content_length} bytes, above the limit of {limit}",
            field="message",
        )  # fmt: skip
    chunks: list[bytes] = []
    size = 0
    timeout = request.app["state"].cfg.limits.body_timeout
    try:
        async with asyncio.timeout(timeout):
            while chunk := await request.content.read(64 * 1024):
                size += len(chunk)
                if size > limit:
                    raise NtfyError(code, f"body is above the limit of {limit} bytes", "message")
                chunks.append(chunk)
    except TimeoutError:
        late = web.HTTPRequestTimeout(
            text=dumps({"code": 40801, "http": 408,
                        "error": f"the body did not arrive within {timeout:g} s"}),
            content_type="application/json",
        )  # fmt: skip
        late.force_close()  # the rest of the body is not worth waiting for
        raise late from None
    return b"".join(chunks)


def _check_rate(state: RelayState, request: web.Request) -> None:
    state.check_rate(request)  # 429 with Retry-After (RelayState.check_rate has the rules)


def _topic(name: str) -> str:
    """A relay topic, or ntfy's 40009 (not a topic name) / 40010 (a reserved one)."""
    try:
        return check_relay_topic(name)
    except MessageError as exc:
        raise NtfyError(40010 if TOPIC.fullmatch(name) else 40009, str(exc), "topic") from None


async def _accept(state: RelayState, topic: str, parsed: Publish) -> web.Response:
    """Store and fan out what ``ntfyproto`` parsed; what the relay does not do yet is refused
    by name (never accepted and then dropped)."""
    for wanted, what in ((parsed.poll_id, "poll requests (X-Poll-ID)"),):  # fmt: skip
        if wanted:
            raise NtfyError(40000, f"{what} is not supported by this relay yet")
    msg: Message = from_fields(parsed.fields, topic=topic)
    if parsed.delay:
        return await _schedule(state, msg, parsed.delay)
    if parsed.cache:
        msg = replace(msg, expires=msg.time + state.cfg.limits.retention_age)
    stored = await state.hub.publish([msg], cache=parsed.cache)
    state.metrics.published.inc()
    out = encode(stored[0].message if stored else msg)
    return web.json_response({**out, "event": "message"}, dumps=dumps)


async def _schedule(state: RelayState, msg: Message, delay: str) -> web.Response:
    """A delayed publish (ntfy's scheduled delivery): kept durably before the answer, which
    carries the delivery time as ``time`` (as ntfy answers); the hub's scheduler stores,
    fans out and forwards it then. ``parse_delay`` has ntfy's rules and codes."""
    due = parse_delay(delay, time.time(), max_delay=state.cfg.limits.max_delay)
    msg = replace(msg, time=due, expires=due + state.cfg.limits.retention_age)
    await state.hub.schedule(msg)
    state.metrics.published.inc()
    return web.json_response({**encode(msg), "event": "message"}, dumps=dumps)


async def publish(request: web.Request) -> web.Response:
    """``PUT|POST /<topic>``: the body is the message; options from headers and query
    (ntfyproto.publish has the rules)."""
    state: RelayState = request.app["state"]
    topic = _topic(request.match_info["topic"])
    ident = state.identify(request)
    state.require(ident, "write", topic)
    _check_rate(state, request)
    parts, code = _parts(request), 41301
    limit: int = state.cfg.limits.message_size
    if parts.read(fields.TEMPLATE):  # the body is a template's JSON data: ntfy allows 32 KiB
        limit, code = templates.body_limit(limit), 41303
        body = await _read_body(request, limit, code)
        who = None if ident.name == "anonymous" else ident.name  # a client: as the rate counts
        renders, client = request.app[RENDERS], rate_key(request.remote or "?", who)
        parsed = await renders.run(client, parse_publish, parts, body)
    else:  # ntfy's util.Peek: the first message_size bytes decide what the body is
        body, more = await files.peek(request, limit)
        if body_is_file(parts, body, truncated=more):
            return await _accept_file(request, topic, parts, body, more=more)
        if more:
            raise NtfyError(code, f"body is above the limit of {limit} bytes", "message")
        parsed = parse_publish(parts, body)
    return await _accept(state, topic, _path_sid(request, parsed))


RENDERS = web.AppKey("template_renders", Renders)
"""Templated publishes' renders: one thread, one at a time, fair per client (edge_relay.renders)."""


def _path_sid(request: web.Request, parsed: Publish) -> Publish:
    if sid := request.match_info.get("sid"):  # ntfy: the path's sequence id wins
        return replace(parsed, fields={**parsed.fields, "sequence_id": check_sequence_id(sid)})
    return parsed


async def _accept_file(
    request: web.Request, topic: str, parts: Request, head: bytes, *, more: bool,
    body: Publish | None = None,
) -> web.Response:  # fmt: skip
    """A publish whose body is a file: the file complete on disk first, then the message
    (``edge_relay.files`` has the order and why)."""
    state: RelayState = request.app["state"]
    try:
        parsed = await files.receive(request, state, topic, parts, head, more=more, body=body)
    except DiskFull as exc:
        raise files.disk_full(exc) from None
    mid = parsed.fields["id"]
    return await files.settle_after(state, mid, _accept(state, topic, _path_sid(request, parsed)))


async def publish_sequence(request: web.Request) -> web.Response:
    """``PUT|POST /<topic>/<sequence_id>`` (ntfy 2.16): a publish whose sequence id is the
    path's, above any ``X-Sequence-ID``; it replaces the notification with that id. Also
    ``POST /<topic>/json`` or ``/publish``: ntfy routes those here too (sequence id "json")."""
    return await publish(request)


async def sequence_event(request: web.Request) -> web.Response:
    """``PUT /<topic>/<sid>/clear`` (or ``/read``) and ``DELETE /<topic>/<sid>``: ntfy 2.16's
    ``message_clear`` / ``message_delete`` event, stored and streamed like a message (so
    ``since=`` and the upstream see it), needing write permission as publishing does."""
    state: RelayState = request.app["state"]
    topic = _topic(request.match_info["topic"])
    state.require(state.identify(request), "write", topic)
    _check_rate(state, request)
    sid = check_sequence_id(request.match_info["sid"])
    kind = "message_delete" if request.method == "DELETE" else "message_clear"
    msg = from_fields({"message": "", "event": kind, "sequence_id": sid}, topic=topic)
    msg = replace(msg, expires=msg.time + state.cfg.limits.retention_age)
    stored = await state.hub.publish([msg], cache=True)
    if kind == "message_delete":  # ntfy: a delete also cancels what is still scheduled
        await state.hub.cancel_scheduled(topic, sid)
    state.metrics.published.inc()
    return web.json_response(event_json(stored[0].message if stored else msg), dumps=dumps)


async def publish_json(request: web.Request) -> web.Response:
    """``POST /`` with ntfy's JSON message object, merged with the headers beside it as
    ntfy merges them (ntfyproto.publish.parse_json_publish)."""
    state: RelayState = request.app["state"]
    limit = 2 * state.cfg.limits.message_size  # ntfy: twice the message limit for the JSON
    body = await _read_body(request, limit, code=41303)
    parts = _parts(request)
    topic, parsed = parse_json_publish(parts, body, max_size=limit, files=True)
    topic = _topic(topic)
    state.require(state.identify(request), "write", topic)
    _check_rate(state, request)
    if parsed.file:  # ntfy: a JSON "filename" without "attach" stores the message as the file
        return await _accept_file(request, topic, parts, parsed.upload, more=False, body=parsed)
    return await _accept(state, topic, parsed)


async def health(request: web.Request) -> web.Response:
    """``GET /v1/health``: up, counts, and the upstream bridge's state."""
    state: RelayState = request.app["state"]
    up = state.upstream
    sched = state.hub.scheduler
    return web.json_response(
        {"healthy": True, "version": __version__, "uptime": round(time.time() - state.started, 1),
         "subscribers": state.hub.subscriber_count, "rejected": state.rejected,
         "upstream": {"url": up.url, "state": up.state, "outbox": up.outbox,
                      "last_error": up.error() if up.state != "connected" else None},
         "scheduler": {"running": sched is not None and sched.running,
                       "next_due": sched.next_due if sched else None,
                       "released": sched.released if sched else 0,
                       "caught_up": sched.caught_up if sched else 0,
                       "failures": sched.failures if sched else 0}}
    )  # fmt: skip


async def metrics(request: web.Request) -> web.Response:
    state: RelayState = request.app["state"]
    body = generate_latest(state.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def not_found(request: web.Request) -> web.Response:
    return error(404, f"page not found: no endpoint {request.method} {request.path[:80]!r}")


def make_app(state: RelayState) -> web.Application:
    """The aiohttp application with every route of the relay's API."""
    app = web.Application(middlewares=[track, errors], client_max_size=1024 * 1024)
    app["state"] = state
    if state.cfg.compress:
        deflate.use_fastest()  # logged once listening: a failed bind stays one line
    app[acks.WAITERS] = acks.AckWaiters()
    app[RENDERS] = renders = Renders()

    async def stop_renders(_: web.Application) -> None:
        renders.close()

    app.on_cleanup.append(stop_renders)
    app.on_response_prepare.append(ntfy_api.cors)
    app.on_response_prepare.append(gzipfile.no_ranges)
    r = app.router
    r.add_get("/v1/health", health)
    r.add_post("/v1/receipts", receipts.receipts_post)
    r.add_get("/v1/messages/{id}/receipts", receipts.receipts_get)
    admin.add_routes(r)  # /v1/tokens, /v1/admin/overview (admin tokens only)
    r.add_get("/v1/messages/{id}/ack", acks.ack_get)
    r.add_get("/metrics", metrics)
    r.add_get(r"/file/{name}", files.serve_file)  # and HEAD (aiohttp adds it)
    ntfy_api.add_routes(r)  # /v1/account, /v1/stats, /<topics>/auth, OPTIONS
    topic_get: Handler = ntfy_api.topic_get
    if state.cfg.web.enabled:
        web_routes.add_routes(r)  # /, /app/<file>
        topic_get = web_routes.topic_page(topic_get)  # a browser's GET /<topic>: the app
    r.add_post("/", publish_json)
    r.add_put("/", publish_json)
    r.add_get(r"/{topics}/{fmt:json|sse|raw|ws}", subscribe)
    topic_publish = ntfy_api.poll_requests(publish)  # X-Poll-ID: a poll_request, else publish
    r.add_get(r"/{topic}/{verb:publish|send|trigger}", topic_publish)  # ntfy's GET publishing
    r.add_get("/{topic}", topic_get)
    r.add_route("PUT", "/{topic}", topic_publish)
    r.add_route("POST", "/{topic}", topic_publish)
    topic_sequence = ntfy_api.poll_requests(publish_sequence)
    r.add_route("PUT", "/{topic}/{sid}", topic_sequence)  # after GET /<t>/json|publish
    r.add_route("POST", "/{topic}/{sid}", topic_sequence)
    r.add_route("DELETE", "/{topic}/{sid}", sequence_event)
    r.add_route("PUT", r"/{topic}/{sid}/{verb:clear|read}", sequence_event)
    r.add_route("*", "/{tail:.*}", not_found)
    return app
