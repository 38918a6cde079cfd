"""The relay's management API, for its owner's admin token (issue 17): tokens and an overview.

* ``GET /v1/tokens``: the tokens (name, read/write patterns, admin, created; never a hash)
  and what anonymous requests may do.
* ``POST /v1/tokens`` with ``{"name", "read": [...], "write": [...], "admin": false}``: a new
  token; the answer holds its secret, the only time it is shown (the file keeps its hash).
* ``DELETE /v1/tokens/<name>``: revoke it (its open streams end within a second, as after
  ``edge-relay token revoke``); the last admin token cannot be revoked this way.
* ``GET /v1/admin/overview``: what a dashboard shows beside ``/v1/health`` and
  ``/v1/stats``: open streams per token and topic, the devices that reported lately,
  messages per hour, the store and the upstream outbox.

Only an identity with the ``admin`` grant may call them: a request without a token gets 401,
a token without the grant 403. Writes go through ``edge_relay.auth`` (the CLI's locked,
atomic 0600 writer) and the relay applies the new file at once (``RelayState.authdb``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from aiohttp import web

from agent import __version__
from agent.envelope import dumps
from agent.errors import AuthError, MessageError, UsageError
from edge_relay import auth, ntfy_api
from edge_relay.state import Forbidden, RelayState

log = logging.getLogger(__name__)
HOURS = 24
"""Hours of messages per hour and of recently reporting devices in the overview."""
_MAX_BODY = 16 * 1024  # a token request is a name and two short lists


def require_admin(request: web.Request) -> auth.Identity:
    """The caller, if it holds the ``admin`` grant: 401 without a token, 403 without it."""
    state: RelayState = request.app["state"]
    ident = state.identify(request)
    if ident.admin:
        return ident
    if ident.name == "anonymous":
        raise AuthError("this endpoint needs an admin token")
    raise Forbidden(f"token {ident.name!r} is not an admin token")


def _auth_path(state: RelayState) -> Path:
    if state.cfg.auth_file is None:
        raise web.HTTPConflict(
            text=ntfy_api.error_body(409, "the relay runs without --auth-file: there are no "
                                     "tokens to manage (start it with one)", 40901),
            content_type="application/json",
        )  # fmt: skip
    return state.cfg.auth_file


async def list_tokens(request: web.Request) -> web.Response:
    """``GET /v1/tokens``."""
    require_admin(request)
    state: RelayState = request.app["state"]
    db = await state.to_thread(auth.load, _auth_path(state))
    return web.json_response(
        {"anonymous": {"read": list(db.anonymous.read), "write": list(db.anonymous.write)},
         "tokens": [auth.entry_of(n, e) for n, e in sorted(db.tokens.items())]},
        dumps=dumps,
    )  # fmt: skip


async def add_token(request: web.Request) -> web.Response:
    """``POST /v1/tokens``: 400 for a bad name or pattern, 409 for a name in use."""
    require_admin(request)
    state: RelayState = request.app["state"]
    path = _auth_path(state)
    if (request.content_length or 0) > _MAX_BODY:
        raise MessageError(f"body is above the limit of {_MAX_BODY} bytes", field="body")
    body = await request.content.read(_MAX_BODY + 1)
    if len(body) > _MAX_BODY:
        raise MessageError(f"body is above the limit of {_MAX_BODY} bytes", field="body")
    name, read, write, admin = _token_request(body)
    try:
        secret = await state.to_thread(auth.add_token, path, name, read, write, admin=admin)
    except UsageError as exc:
        return _refused(exc)
    except OSError as exc:
        return _unwritable(path, exc)
    state.authdb()  # in force for the next request (the file's identity changed)
    db = await state.to_thread(auth.load, path)
    log.info("token %r added through the API (admin=%s)", name, admin)
    answer = {**auth.entry_of(name, db.tokens[name]), "token": secret}
    return web.json_response(answer, status=201, dumps=dumps)


async def revoke_token(request: web.Request) -> web.Response:
    """``DELETE /v1/tokens/<name>``: 404 for an unknown name."""
    require_admin(request)
    state: RelayState = request.app["state"]
    path = _auth_path(state)
    name = request.match_info["name"]
    try:
        await state.to_thread(auth.revoke_token, path, name, keep_an_admin=True)
    except UsageError as exc:
        return _refused(exc)
    except OSError as exc:
        return _unwritable(path, exc)
    state.authdb()  # its streams end now, not at the next poll
    log.info("token %r revoked through the API", name)
    return web.json_response({"revoked": name}, dumps=dumps)


def _token_request(body: bytes) -> tuple[str, list[str], list[str], bool]:
    """The fields of a token request; MessageError (400) naming the first bad one."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MessageError("body is not JSON", field="body") from None
    if not isinstance(data, dict):
        raise MessageError('body must be {"name", "read", "write", "admin"}', field="body")
    if unknown := sorted(set(data) - {"name", "read", "write", "admin"}):
        raise MessageError(f"unknown field {unknown[0][:40]!r}", field="body")
    name, admin = data.get("name"), data.get("admin", False)
    if not isinstance(name, str):
        raise MessageError("'name' must be a string", field="name")
    if not isinstance(admin, bool):
        raise MessageError("'admin' must be true or false", field="admin")
    modes = []
    for mode in ("read", "write"):
        value = data.get(mode, [])
        if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
            raise MessageError(f"'{mode}' must be a list of topic patterns", field=mode)
        modes.append(value)
    return name, modes[0], modes[1], admin


def _refused(exc: UsageError) -> web.Response:
    text = str(exc)
    status = 404 if text.startswith("no token named") else 409 if "exists" in text else 400
    if "last admin token" in text:
        status = 409
    return ntfy_api.error(status, text)


def _unwritable(path: Path, exc: OSError) -> web.Response:
    log.error("cannot write the auth file %s: %s", path, exc)
    return ntfy_api.error(
        503, f"the auth file cannot be written here ({exc.strerror or exc}); manage tokens "
        "with `edge-relay token` on the relay's host", 50302,
    )  # fmt: skip


async def overview(request: web.Request) -> web.Response:
    """``GET /v1/admin/overview``: see the module docstring."""
    require_admin(request)
    state: RelayState = request.app["state"]
    now = time.time()
    since = int(now) - HOURS * 3600
    hours = await state.to_thread(state.store.messages_per_hour, since - since % 3600)
    devices = await state.to_thread(state.store.recent_devices, since)
    stored = await state.to_thread(state.store.count)
    up = state.upstream
    streams = state.streams.by_name()
    return web.json_response(
        {"version": __version__, "uptime": round(now - state.started, 1), "time": int(now),
         "subscribers": state.hub.subscriber_count,
         "streams": [{"name": n, "streams": c, "topics": t}
                     for n, (c, t) in sorted(streams.items())],
         "devices": [{"owner": o, "device": d, "device_name": m, "last_seen": t,
                      "receipts": n} for o, d, m, t, n in devices],
         "messages_per_hour": [{"hour": h, "messages": n} for h, n in hours],
         "store": {"messages": stored, "rejected": state.rejected},
         "upstream": {"url": up.url, "state": up.state, "outbox": up.outbox,
                      "last_error": up.error() if up.state != "connected" else None}},
        dumps=dumps,
    )  # fmt: skip


def add_routes(router: web.UrlDispatcher) -> None:
    """The management routes (before the relay's catch-all topic routes)."""
    router.add_get("/v1/tokens", list_tokens)
    router.add_post("/v1/tokens", add_token)
    router.add_delete("/v1/tokens/{name}", revoke_token)
    router.add_get("/v1/admin/overview", overview)
