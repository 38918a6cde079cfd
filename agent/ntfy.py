"""The ntfy subscribe protocol as pure functions: server URLs, the ``/ws`` URL, stream events.

Theory of operation
-------------------
An ntfy-compatible server (an edge relay, ntfy.sh, a self-hosted ntfy) streams JSON objects,
one per WebSocket text frame (or per line on ``/json``), each with an ``event`` field
(docs.ntfy.sh, "Subscribe via API"):

``open``
    first frame of every subscription: the server accepted it.
``keepalive``
    sent by the server when idle (ntfy's default: every 45 s). Any frame proves the link is
    alive; none for ``1.5 x`` the interval means the link is dead (``dead_after``).
``message``
    a message with ntfy's envelope fields (``id``, ``time``, ``topic``, ``message``, ...).
``poll_request``
    the server asks the client to fetch (used by ntfy for iOS, whose push carries no content);
    we answer by reconnecting with ``since=<cursor>``, which fetches exactly what is missing.
``message_clear`` / ``message_delete`` (ntfy 2.16)
    the notification of a sequence (``sequence_id``) was cleared (read and dismissed) or
    deleted. They become Messages too, with ``extra["event"]`` naming the event (absent means
    ``message``), so they go through the same store transaction as messages: the ``since=``
    cursor moves past them and a replay stores (and acts on) each once. The service routes
    them to the notifier as close/update instead of a new notification.

``message_state`` (an edgepush relay)
    a synced state (agent.states): one of the user's other devices clicked, dismissed, read
    or acknowledged a message. It becomes an Event of kind ``state``; one that does not parse
    is ignored (it is not a message: nothing is lost, and the stream carries on).

Other event names (a future server's) are ignored.

What is wrong is split in two, because the caller does different things next:

* the *stream* is broken (not JSON, not an object, no ``event``, not UTF-8, too large): the
  server does not speak the protocol, or a proxy mangles it. ``parse_frame`` raises
  ConnectionLost; the transport drops the connection and reconnects with backoff, resuming
  from the last committed cursor, so nothing that was accepted is lost.
* one *message* is bad (a priority of ``"purple"``, an id with spaces, a number JSON cannot
  carry such as ``1e400``, nesting deeper than ``agent.envelope.MAX_DEPTH``): ``parse_frame``
  returns a ``rejected`` event naming the field, the transport keeps the raw frame in the
  store's ``rejected`` table, and the messages around it carry on. These must not be a broken
  stream: a reconnect asks ``since=`` the cursor and the server sends the same frame again,
  for ever. (NaN/Infinity literals and other malformed JSON are a broken stream: no ntfy
  server or relay writes them, only something that does not speak the protocol.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple
from urllib.parse import quote, urlsplit, urlunsplit

from agent.envelope import (
    Message,
    TooDeep,
    check_id,
    check_unicode,
    from_fields,
    lenient_id,
    parse_json,
)
from agent.errors import ConfigError, ConnectionLost, MessageError
from agent.states import STATE_EVENT, StateEvent, parse_event

DEFAULT_KEEPALIVE = 45.0
"""ntfy's default keepalive interval in seconds."""
DEAD_FACTOR = 1.5
NTFY_SCHEMES = ("http", "https", "ws", "wss")
MQTT_SCHEMES = ("mqtt", "mqtts", "tcp", "ssl", "ws+mqtt", "wss+mqtt")
AUTO = "auto"

MESSAGE_EVENTS = frozenset({"message", "message_clear", "message_delete"})
"""Events stored as Messages (``extra["event"]`` keeps the two that are not ``message``)."""

EventKind = Literal["open", "keepalive", "message", "poll_request", "rejected", "state", "other"]


class Event(NamedTuple):
    """One decoded stream frame (a NamedTuple: immutable, and built once per frame at about
    half the cost of a frozen dataclass, whose ``__init__`` goes through object.__setattr__)."""

    kind: EventKind
    message: Message | None = None
    reason: str | None = None
    """For ``rejected``: what was wrong with the message."""
    id: str | None = None
    """For ``rejected``: the message's id when it had a usable one."""
    state: StateEvent | None = None
    """For ``state``: the synced state."""


@dataclass(frozen=True, slots=True)
class NtfyServer:
    """An ntfy-compatible server as the agent talks to it.

    ``http_base`` is the canonical name (``http://host:port/base``): it is the cursor's source,
    so ``ws://relay:8080`` and ``http://relay:8080`` resume from the same position.
    """

    url: str
    http_base: str
    ws_base: str
    host: str
    port: int
    tls: bool

    @property
    def receipts_url(self) -> str:
        return f"{self.http_base}/v1/receipts"


def server_kind(url: str) -> Literal["ntfy", "mqtt", "auto"]:
    """Which family a ``--server`` value belongs to; raises ConfigError for anything else."""
    if url.strip().lower() == AUTO:
        return "auto"
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in NTFY_SCHEMES:
        return "ntfy"
    if scheme in MQTT_SCHEMES:
        return "mqtt"
    raise ConfigError(
        f"server {url!r}: expected http(s)://host[:port][/base], ws(s)://..., mqtt(s)://... "
        f"or 'auto'"
    )


def parse_server(url: str) -> NtfyServer:
    """Parse ``http(s)://host[:port][/base]`` or ``ws(s)://...`` into an NtfyServer.

    Credentials never go in the URL (it is logged and shown by ``status``): tokens live in the
    keyring (``pushagent login URL --token-stdin``). Raises ConfigError naming the problem.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"server {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in NTFY_SCHEMES:
        raise ConfigError(f"server {url!r}: not an http(s):// or ws(s):// URL")
    if not parts.hostname:
        raise ConfigError(f"server {url!r}: no host name")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"server {parts.hostname!r}: credentials do not belong in the URL; "
            f"store a token with: pushagent login {scheme}://{parts.hostname} --token-stdin"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"server {url!r}: a server URL takes no ?query or #fragment")
    tls = scheme in ("https", "wss")
    port = port or (443 if tls else 80)
    host = parts.hostname
    netloc = f"[{host}]" if ":" in host else host
    if port != (443 if tls else 80):
        netloc = f"{netloc}:{port}"
    base = parts.path.rstrip("/")
    http = urlunsplit(("https" if tls else "http", netloc, base, "", ""))
    ws = urlunsplit(("wss" if tls else "ws", netloc, base, "", ""))
    shown = urlunsplit((scheme, netloc, base, "", ""))
    return NtfyServer(url=shown, http_base=http, ws_base=ws, host=host, port=port, tls=tls)


def check_topics(topics: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Topics usable in an ntfy subscribe path; raises ConfigError naming a bad one."""
    if not topics:
        raise ConfigError("no topics to subscribe to: give --topic at least once")
    from agent.topics import NTFY_RULE, NTFY_TOPIC

    for t in topics:
        if not NTFY_TOPIC.fullmatch(t):
            raise ConfigError(f"topic {t!r} cannot be subscribed on an ntfy server: {NTFY_RULE}")
    return tuple(topics)


def subscription(topics: tuple[str, ...] | list[str]) -> str:
    """The cursor's subscription key: the topics, sorted and comma-joined."""
    return ",".join(sorted(set(topics)))


def ws_url(server: NtfyServer, topics: tuple[str, ...] | list[str], since: str | None) -> str:
    """``<ws_base>/<t1>,<t2>/ws?since=<since>`` (topics percent-encoded, one WebSocket)."""
    path = ",".join(quote(t, safe="") for t in check_topics(topics))
    url = f"{server.ws_base}/{path}/ws"
    if since:
        url += "?since=" + quote(since, safe="")
    return url


def dead_after(interval: float | None) -> float:
    """Seconds of silence after which the link counts as dead: 1.5x the keepalive interval."""
    return DEAD_FACTOR * (interval if interval and interval > 0 else DEFAULT_KEEPALIVE)


def parse_frame(frame: str | bytes, *, max_size: int) -> Event:
    """Decode one stream frame (see the module docstring).

    Raises ConnectionLost when the stream itself is broken; a bad message is an Event of kind
    ``rejected``, never an exception.
    """
    if len(frame) > max_size:
        raise ConnectionLost(f"server sent a {len(frame)}-byte frame, above {max_size} bytes")
    if isinstance(frame, bytes):
        try:
            frame = frame.decode("utf-8")
        except UnicodeDecodeError:
            raise ConnectionLost("server sent a frame that is not UTF-8 text") from None
    try:
        obj = _object(frame)
    except MessageError as exc:
        return Event("rejected", reason=f"{exc} (field {exc.field})", id=lenient_id(frame))
    event = obj.get("event")
    if not isinstance(event, str):
        raise ConnectionLost(f"server sent an object without an 'event' field: {_shown(frame)}")
    if event in ("open", "keepalive", "poll_request"):
        return Event(event)  # type: ignore[arg-type]
    if event == STATE_EVENT:
        try:
            return Event("state", state=parse_event(obj))
        except MessageError:
            return Event("other")
    if event not in MESSAGE_EVENTS:
        return Event("other")
    fields = obj  # freshly decoded and ours alone: drop the event name in place, no copy
    if event == "message":
        del fields["event"]  # absent means "message": the common case carries no extra
    try:
        check_unicode(frame, fields, "message")
        return Event("message", message=from_fields(fields))
    except MessageError as exc:
        return Event("rejected", reason=f"{exc} (field {exc.field})", id=_usable_id(fields))


def _object(text: str) -> dict[str, Any]:
    try:
        obj = parse_json(text, "frame")
    except TooDeep as exc:
        raise MessageError(f"frame is {exc}", field="frame") from None
    except ValueError:
        raise ConnectionLost(f"server sent a frame that is not JSON: {_shown(text)}") from None
    if not isinstance(obj, dict):
        raise ConnectionLost(f"server sent JSON that is not an object: {_shown(text)}")
    return obj


def _usable_id(fields: dict[str, Any]) -> str | None:
    try:
        return check_id(fields.get("id"))
    except MessageError:
        return None


def _shown(text: str) -> str:
    return repr(text[:60] + ("..." if len(text) > 60 else ""))
