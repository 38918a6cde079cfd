"""HTTP routes of the web app: ``GET /``, ``GET /app/<file>``, and ``GET /<topic>`` for browsers.

As in ntfy (``handleTopic`` in ``server/server.go``), ``GET /<topic>`` is the web app showing
that topic. ntfy answers the app to every such GET; the relay answers it only to a request
whose ``Accept`` takes ``text/html`` (a browser navigating), so curl, ntfy's clients and the
agent, which send no ``Accept`` or ``application/json``, keep today's API answers on the same
URL. ``[web] enabled = false`` (``--no-web``) leaves all of these routes out: ``/`` is 404.

Every app response carries a Content-Security-Policy that allows scripts, styles and
connections only from the relay itself (no inline script, no ``eval``); images may come from
anywhere over http(s), because message icons and attachments are URLs the publisher chose,
and ``connect-src`` adds http(s) for the "http" action buttons (ntfy's web app sends those
requests itself; they run only on a click).
"""

from __future__ import annotations

import mimetypes
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from agent.errors import MessageError
from agent.ntfyproto import fields
from edge_relay.core import check_relay_topic
from edge_relay.streams import param

STATIC = Path(__file__).resolve().parent / "static"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: http: https:; "
    "connect-src 'self' http: https:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def accepts_html(accept: str) -> bool:
    """True when an ``Accept`` value takes ``text/html`` (RFC 9110 12.5.1: a q-value above 0);
    ``*/*`` alone does not count (curl sends it)."""
    for part in accept.split(","):
        name, _, params = part.partition(";")
        if name.strip().lower() != "text/html":
            continue
        for item in params.split(";"):
            key, _, value = item.strip().partition("=")
            if key.lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


def asset(name: str) -> Path | None:
    """The file ``name`` under ``static/``, or None for a missing one or one outside it."""
    if not name or name.startswith("/") or "\\" in name or "\0" in name:
        return None
    try:
        path = (STATIC / name).resolve()
        if not path.is_relative_to(STATIC) or not path.is_file():
            return None
    except OSError:  # a name the file system refuses (too long: ENAMETOOLONG) names no file
        return None
    return path


def _file(path: Path) -> web.Response:
    ctype = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
    return web.Response(
        body=path.read_bytes(),
        content_type=ctype or "application/octet-stream",
        charset="utf-8" if path.suffix in _TYPES else None,
        headers=_HEADERS,
    )


async def index(request: web.Request) -> web.Response:
    """``GET /`` (and ``GET /<topic>`` from a browser): the app's page."""
    return _file(STATIC / "index.html")


async def app_file(request: web.Request) -> web.Response:
    """``GET /app/<file>``: one of the app's assets; 404 for anything else."""
    path = asset(request.match_info["name"])
    if path is None:
        raise web.HTTPNotFound(text=f"no app file {request.match_info['name'][:80]!r}")
    return _file(path)


def topic_page(api: Handler) -> Handler:
    """``GET /<topic>``: the app for a browser (no UnifiedPush query), else ``api``."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if (
            accepts_html(request.headers.get("Accept", ""))
            and not _unifiedpush(request)
            and _is_topic(request.match_info["topic"])
        ):
            return await index(request)
        return await api(request)

    return handler


def _is_topic(name: str) -> bool:
    try:
        check_relay_topic(name)
    except MessageError:
        return False  # /v1, /metrics...: reserved names keep their 404
    return True


def _unifiedpush(request: web.Request) -> bool:
    return param(request, fields.UNIFIEDPUSH).lower() in ("1", "yes", "true")


def add_routes(router: web.UrlDispatcher) -> None:
    """``/`` and ``/app/<file>``; must come before the relay's ``/{topic}`` routes."""
    router.add_get("/", index)
    router.add_get(r"/app/{name:.+}", app_file)
