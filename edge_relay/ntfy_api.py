"""ntfy's smaller endpoints and conventions, as ntfy's server (``server/server.go``) has them.

* CORS: ``Access-Control-Allow-Origin: *`` on every response the application sends (ntfy's
  default ``access-control-allow-origin``), and an ``OPTIONS`` preflight answer on any path
  (``handleOptions``), so a web page can publish and subscribe.
* ``GET /<topics>/auth``: ``{"success": true}`` when the caller may read every topic, else
  the 401/403 a subscription would get (``handleTopicAuth`` behind ``authorizeTopicRead``).
* ``GET /<topic>?up=1`` (also ``unifiedpush=``/``X-UnifiedPush:``): UnifiedPush discovery,
  ``{"unifiedpush":{"version":1}}``; without it ``GET /<topic>`` is ntfy's web app, which the
  relay does not serve: 404.
* ``GET /v1/account``: ntfy's account view. Without a token the anonymous one ntfy returns
  (``username "*"``, ``role "anonymous"``) with the relay's limits; with a token, its name
  and ``role "user"`` (``"admin"`` for a token with the admin grant, as ntfy names its
  admins). No ``stats``: the relay keeps no per-visitor counts (ntfy omits the key when it
  has none too).
* ``GET /v1/stats``: ntfy's ``{"messages", "messages_rate"}`` plus the relay's per-topic
  receipt counts under ``topics`` (extra keys do not disturb ntfy's clients); with
  ``topic=``/``since=`` also ``analytics``, the per-day funnel (``edge_relay.stats``).
* ``X-Poll-ID`` (``Poll-ID``, ``?poll-id=``) on a publish: ntfy's ``poll_request`` event
  instead of a message (``parsePublishParams``/``newPollRequestMessage``): ``message`` "New
  message", ``poll_id``, not stored, the body ignored, sent to the subscribers connected now
  (``/raw`` shows it as an empty line; filters let it through, as ntfy's do).
* Error codes: ntfy's numeric ``code`` and ``link`` (``server/errors.go``) for the errors
  that have one, chosen by status and by the field a ``MessageError`` names.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from agent.envelope import dumps, encode, new_id
from agent.errors import MessageError
from agent.ntfyproto import fields
from edge_relay import stats as funnel
from edge_relay.core import TOPIC_RE, PollRequest, check_relay_topic, event_of, parse_topic_list
from edge_relay.state import RelayState
from edge_relay.streams import param

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_DOCS = "https://ntfy.sh/docs"
_AUTH_LINK = f"{_DOCS}/publish/#authentication"
_LIMITS_LINK = f"{_DOCS}/publish/#limitations"
# ntfy's code and link for a 400 by the field the MessageError names (server/errors.go)
_FIELD_CODES: dict[str, tuple[int, str | None]] = {
    "priority": (40007, f"{_DOCS}/publish/#message-priority"),
    "since": (40008, f"{_DOCS}/subscribe/api/#fetch-cached-messages"),
    "topic": (40009, None),
    "actions": (40018, f"{_DOCS}/publish/#action-buttons"),
}
_STATUS_LINKS = {401: _AUTH_LINK, 403: _AUTH_LINK, 429: _LIMITS_LINK}
WS_UPGRADE_MISSING = (40016, f"{_DOCS}/subscribe/api/#websockets")
TOO_MANY_SUBSCRIPTIONS = (42903, _LIMITS_LINK)


def error_body(status: int, text: str, code: int | None = None, link: str | None = None) -> str:
    """ntfy's error JSON: ``{"code", "http", "error"[, "link"]}``; the code defaults to
    ``status * 100 + 1`` (ntfy's first code of each status) and the link to the status's."""
    body: dict[str, object] = {"code": code or status * 100 + 1, "http": status, "error": text}
    link = link or _STATUS_LINKS.get(status)
    if link:
        body["link"] = link
    return dumps(body)


def status_link(status: int) -> str | None:
    """The documentation link ntfy gives errors of this status (auth, limits), if any."""
    return _STATUS_LINKS.get(status)


def error(status: int, text: str, code: int | None = None, link: str | None = None) -> web.Response:
    """An error response in ntfy's shape."""
    return web.Response(
        status=status, text=error_body(status, text, code, link), content_type="application/json"
    )


def json_error(
    cls: type[web.HTTPException], text: str, code: tuple[int, str | None]
) -> web.HTTPException:
    """An ``HTTPException`` with ntfy's error JSON, which the error middleware passes on."""
    return cls(text=error_body(cls.status_code, text, *code), content_type="application/json")


def message_error_code(status: int, exc: MessageError) -> tuple[int | None, str | None]:
    """ntfy's code and link for a refused request: an explicit ``code`` attribute on the
    error (and ``link``) wins, then the field's code for a 400, else the status's."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        link = getattr(exc, "link", None)
        return code, link if isinstance(link, str) else None
    if status == 400 and exc.field in _FIELD_CODES:
        return _FIELD_CODES[exc.field]
    return None, None


async def cors(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response (streams and WebSockets too, errors too)
    allows any origin, as ntfy does by default."""
    response.headers.setdefault("Access-Control-Allow-Origin", "*")


async def options(request: web.Request) -> web.Response:
    """``OPTIONS <any path>``: the CORS preflight answer (``handleOptions``)."""
    return web.Response(
        headers={
            "Access-Control-Allow-Methods": "GET, PUT, POST, PATCH, DELETE",
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Headers": "*",
        }
    )


async def topic_auth(request: web.Request) -> web.Response:
    """``GET /<t1>,<t2>/auth``: may the caller read these topics? (ntfy's clients ask before
    they subscribe.)"""
    state: RelayState = request.app["state"]
    topics = parse_topic_list(
        request.match_info["topics"], limit=state.cfg.limits.max_topics_per_subscription
    )
    ident = state.identify(request)
    for topic in topics:
        state.require(ident, "read", topic)
    return web.json_response({"success": True}, dumps=dumps)


async def topic_get(request: web.Request) -> web.Response:
    """``GET /<topic>``: UnifiedPush discovery with ``up=1``; otherwise ntfy's web app, which
    the relay does not serve (404, as ntfy with its web app off)."""
    # ntfy matches the path against its topic pattern only (a reserved name such as v1 too)
    up = param(request, fields.UNIFIEDPUSH).lower()
    if TOPIC_RE.fullmatch(request.match_info["topic"]) and up in ("1", "yes", "true"):
        return web.json_response({"unifiedpush": {"version": 1}}, dumps=dumps)
    return error(404, "page not found (subscribe with /<topic>/json; browsers get the web app)")


async def account(request: web.Request) -> web.Response:
    """``GET /v1/account``: ntfy's anonymous view, or the token's name (see the module
    docstring)."""
    state: RelayState = request.app["state"]
    ident = state.identify(request)
    lim, att = state.cfg.limits, state.cfg.attachments
    limits = {
        "basis": "ip",  # counted per client address (per token for authenticated ones)
        "messages": int(lim.publish_rate * 86400),  # ntfy's approximation of a daily limit
        "messages_expiry_duration": int(lim.retention_age),
        "emails": 0, "calls": 0, "reservations": 0,
        "attachment_total_size": att.total_size_limit,
        "attachment_file_size": att.file_size_limit,
        "attachment_expiry_duration": att.expiry,
        "attachment_bandwidth": att.daily_bandwidth_limit,
    }  # fmt: skip
    anonymous = ident.name == "anonymous"
    body = {
        "username": "*" if anonymous else ident.name,
        "role": "anonymous" if anonymous else "admin" if ident.admin else "user",
        "limits": limits,
    }
    return web.json_response(body, dumps=dumps)


async def stats(request: web.Request) -> web.Response:
    """``GET /v1/stats``: ntfy's ``messages`` (published since the relay started) and
    ``messages_rate`` (their average per second since then), and under ``topics`` the
    relay's published/delivered/displayed/clicked per topic the caller may read. With
    ``topic=`` or ``since=`` also ``analytics``: the per-day funnel (``edge_relay.stats``)."""
    state: RelayState = request.app["state"]
    ident = state.identify(request)
    extra = await funnel.for_request(request, state) if funnel.wanted(request.query) else None
    table = await state.to_thread(state.store.topic_stats)
    visible = {t: v for t, v in table.items() if ident.grant.allows("read", t)}
    published = state.metrics.registry.get_sample_value("edge_relay_published_total") or 0.0
    uptime = max(time.time() - state.started, 1.0)
    body = {"messages": int(published), "messages_rate": round(published / uptime, 6),
            "topics": visible}  # fmt: skip
    if extra is not None:
        body["analytics"] = extra
    return web.json_response(body, dumps=dumps)


def poll_requests(publish: Handler) -> Handler:
    """``publish`` for a topic, but a request carrying a poll id becomes a ``poll_request``
    (see the module docstring); everything else goes to ``publish`` as it is."""

    async def handler(request: web.Request) -> web.StreamResponse:
        poll_id = param(request, fields.POLL_ID)
        if not poll_id:
            return await publish(request)
        return await _poll_request(request, poll_id)

    return handler


async def _poll_request(request: web.Request, poll_id: str) -> web.Response:
    state: RelayState = request.app["state"]
    topic = check_relay_topic(request.match_info["topic"])
    state.require(state.identify(request), "write", topic)
    state.check_rate(request)
    limit = state.cfg.limits.message_size
    if len(poll_id.encode("utf-8", "replace")) > limit:  # the bound of every text field
        raise MessageError(f"Poll-ID is above the limit of {limit} bytes", field="poll_id")
    msg = PollRequest(id=new_id(), time=int(time.time()), topic=topic, message="New message",
                      extra={"poll_id": poll_id})  # fmt: skip
    await state.hub.publish([msg], cache=False)
    return web.json_response({**encode(msg), "event": event_of(msg)}, dumps=dumps)


def add_routes(router: web.UrlDispatcher) -> None:
    """The routes of this module that must come before the relay's catch-all ones."""
    router.add_get("/v1/account", account)
    router.add_get("/v1/stats", stats)
    router.add_get(r"/{topics}/auth", topic_auth)
    router.add_route("OPTIONS", "/{tail:.*}", options)
