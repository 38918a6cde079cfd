"""Server answers that retrying cannot change, and what a transport's loop does with them.

Pure: no sockets, no asyncio. The transports (WebSocket and MQTT) call in here so they share
one rule (``must_stop``) and one wording (``refusal_text``):

* ``pushagent run`` whose server refuses it before it was ever accepted (a topic the server
  rejects, a missing token, a wrong base path, a CONNACK "not authorized") stops at once with
  the server's own error and exit 2 (``ServerRefused``): retrying forever would hide a
  mistake only a person can fix, as "HTTP 400 ...; reconnecting" in a loop once did.
* a transport that has been connected before in this run keeps going: it retries at the
  backoff cap (``CAP_RETRY``), and ``status`` shows the reason and the interval. A proxy
  mid-deploy or a token being rotated must not end a resident agent for good (systemd
  does not restart an exit 2: the units say ``RestartPreventExitStatus=2``).
"""

from __future__ import annotations

import json

from agent.backoff import is_permanent
from agent.errors import AuthError, ConfigError, ConnectionLost, ServerRefused

MAX_DETAIL = 200
"""Characters of a server's error text kept in the one line: enough for ntfy's messages."""


def refusal_text(status: int, body: bytes) -> str:
    """``server refused the subscription (HTTP 400, ntfy code 40009): <its error>``.

    ntfy (and the relay) answer with a JSON object ``{"code", "http", "error", "link"}``; any
    other body is shown as its text, on one line, control characters escaped, cut to
    ``MAX_DETAIL`` characters.
    """
    head = f"HTTP {status}"
    detail = body[:4096].decode("utf-8", "replace")
    try:
        obj = json.loads(detail)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and isinstance(obj.get("error"), str):
        if isinstance(obj.get("code"), int):
            head += f", ntfy code {obj['code']}"
        detail = obj["error"]
    detail = " ".join(detail.split())
    detail = "".join(c if c.isprintable() else repr(c)[1:-1] for c in detail)
    if len(detail) > MAX_DETAIL:
        detail = detail[:MAX_DETAIL] + "..."
    return f"server refused the subscription ({head})" + (f": {detail}" if detail else "")


def ws_refusal(
    status: int, body: bytes, *, login: str, had_token: bool
) -> ServerRefused | ConnectionLost:
    """The error for a WebSocket upgrade answered ``status``: ServerRefused when permanent
    (401/403 say whether a token was sent and how to log in: ``login`` is the server's
    base), else ConnectionLost."""
    if not is_permanent(status):
        return ConnectionLost(f"server answered HTTP {status} to the WebSocket upgrade")
    text = refusal_text(status, body)
    if status in (401, 403):
        sent = "the access token sent was refused" if had_token else "no access token was sent"
        text += f" ({sent}); run: pushagent login {login} --token-stdin"
    return ServerRefused(text)


def must_stop(exc: AuthError | ConfigError, *, fatal: bool, keep_retrying: bool) -> bool:
    """True when a transport's ``run`` must raise ``exc`` instead of retrying at the cap:
    always for a one-shot command (``fatal``: ``pushagent send``), and for a refusal the
    server made before it ever accepted this transport — unless ``keep_retrying`` (it was
    accepted before in this run, or its owner must not end: a failover child, whose owner
    moves on; the relay's upstream bridge, whose LAN keeps working without it)."""
    return fatal or (isinstance(exc, ServerRefused) and not keep_retrying)


def stopped(url: str, exc: AuthError | ConfigError) -> AuthError | ConfigError:
    """``exc`` with the server's URL in front (the one line ``pushagent run`` prints)."""
    if isinstance(exc, ServerRefused) and not str(exc).startswith(url):
        return ServerRefused(f"{url}: {exc}")
    return exc
