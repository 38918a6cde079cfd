"""A publish request (headers, query, body) → envelope fields, as ntfy's server reads it.

``parse_publish`` is ``parsePublishParams`` + ``handlePublishBody`` (``server/server.go``);
``parse_json_publish`` is ``transformBodyJSON``: the JSON object becomes ``X-`` headers (a
non-empty JSON field *replaces* the header of that name, an empty or absent one leaves the
client's header alone) and its ``message`` the body, then the same ``parse_publish`` runs. So
Apprise's JSON body beside ``X-Priority``/``X-Tags``/``X-Click``/``X-Actions``/``X-Icon``
keeps all of them, and ``{"priority": 5}`` beats a ``Priority: 1`` header, as on ntfy.

Rules worth knowing (all ntfy's):

* A non-empty body is the message, trimmed — it wins over ``X-Message`` (which applies to an
  empty body, as with GET publishing); ``X-Message``'s ``\\n`` becomes a newline; an empty
  message is ``triggered``.
* ``Priority: 9`` / ``0`` / ``purple`` is NtfyError 40007 (not clamped); an RFC 9218
  ``Priority: u=3, i`` header is skipped (see ``fields``).
* ``X-Markdown: yes`` / ``md=1`` / ``Content-Type: text/markdown`` (exactly, any case) →
  ``content_type: text/markdown``.
* ``X-Icon`` and ``X-Attach`` must be http(s) URLs (40021, 40013). An attachment by URL is
  kept as ``attachment: {name, url}`` (the server never fetches it). Whether the body *is* a
  file is ``body_is_file`` (``X-Filename`` without a URL, or a body that is not UTF-8 text or
  above ``message_size``); a caller that stores files passes ``file=True`` and completes the
  object with ``attachment.file_attachment``; for one that does not, such a body is 40014.
* ``X-Email`` → 40001, ``X-Call`` → 40032: e-mail and phone calls are not offered, and a
  message is never accepted with them silently dropped.
* ``Content-Type: application/jose``: the body is an end-to-end encrypted message (a JWE,
  docs/E2E.md), kept as it is with ``encoding: jwe``; ntfy's own server ignores the type, and
  clients that know neither see an opaque string.
* ``up=1`` / ``Content-Encoding: aes128gcm``: UnifiedPush: the body is kept untrimmed, base64
  with ``encoding: base64`` when it is not UTF-8.

* ``X-Template`` / ``tpl=``: title, message and priority rendered from a JSON body
  (``templates``), unless the request is a poll request, UnifiedPush or has an attachment.

What is parsed but left to the caller to act on: ``cache``, ``delay`` (the raw text, after
ntfy's 40002 check), ``poll_id``, ``firebase``; ``template`` says which template was used.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, replace
from typing import Any

from agent.envelope import check_unicode
from agent.errors import MessageError
from agent.jsontext import holds
from agent.ntfyproto import fields as f
from agent.ntfyproto import templates
from agent.ntfyproto.ack import parse_ack
from agent.ntfyproto.actions import check_types, parse_actions
from agent.ntfyproto.attachment import safe_name
from agent.ntfyproto.errors import NtfyError
from agent.ntfyproto.fields import Request

EMPTY_MESSAGE = "triggered"
POLL_MESSAGE = "New message"
PRIORITIES = {"1": 1, "min": 1, "2": 2, "low": 2, "3": 3, "default": 3, "4": 4, "high": 4,
              "5": 5, "max": 5, "urgent": 5}  # fmt: skip
TOPIC = re.compile(r"[-_A-Za-z0-9]{1,64}")
_URL = re.compile(r"https?://")  # ntfy's urlRegex: a prefix, case-sensitive
# publishMessage (server/types.go): JSON key → (Go type, the header transformBodyJSON sets)
_JSON: dict[str, tuple[type, str]] = {
    "topic": (str, ""), "message": (str, ""), "title": (str, "X-Title"),
    "priority": (int, "X-Priority"), "tags": (list, "X-Tags"), "click": (str, "X-Click"),
    "icon": (str, "X-Icon"), "actions": (list, "X-Actions"), "attach": (str, "X-Attach"),
    "markdown": (bool, "X-Markdown"), "filename": (str, "X-Filename"),
    "sequence_id": (str, "X-Sequence-ID"), "email": (str, "X-Email"), "call": (str, "X-Call"),
    "cache": (str, "X-Cache"),
    "firebase": (str, "X-Firebase"), "delay": (str, "X-Delay"),
    "ack": (str, "X-Ack"), "ack_retry": (str, "X-Ack-Retry"), "ack_expire": (str, "X-Ack-Expire"),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Publish:
    """What a publish request asks for: envelope ``fields`` (for ``envelope.from_fields``;
    ``icon``/``encoding`` land in ``extra``) and the options the caller acts on."""

    fields: dict[str, Any]
    cache: bool = True
    firebase: bool = True
    delay: str = ""
    template: str = ""  # "" (off), templates.INLINE or a template's name
    unifiedpush: bool = False
    poll_id: str = ""
    file: bool = False
    """The body is an attachment file (the caller stores it; ``fields`` lack its object)."""
    upload: bytes = b""
    """A JSON publish's file: its ``message`` text, which ntfy stores as the file when the
    JSON names a ``filename`` and no ``attach`` URL (``transformBodyJSON``, case 4)."""


def body_is_file(req: Request, head: bytes, *, truncated: bool) -> bool:
    """``handlePublishBody``'s choice: is the body an attachment file? ``head`` is the body,
    or its first ``message_size`` bytes with ``truncated`` set when there is more.

    In ntfy's order: a poll request, UnifiedPush or an ``X-Attach`` URL keep the body as
    text; an ``X-Filename`` makes it a file; a template's JSON data is text; else a body above
    the message limit or not UTF-8 is a file."""
    if req.read(f.POLL_ID):
        return False
    if req.read_bool(f.UNIFIEDPUSH, False) or req.read(f.CONTENT_ENCODING) == "aes128gcm":
        return False
    if req.read(f.ATTACH):
        return False
    if req.read(f.FILENAME):
        return True
    if templates.mode(req.read(f.TEMPLATE)):
        return False
    if truncated:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def parse_publish(req: Request, body: bytes, *, file: bool = False) -> Publish:
    """``PUT/POST /<topic>`` (and GET ``/<topic>/publish``): NtfyError for what ntfy refuses.

    A body above ``req.max_value`` is 413 (ntfy would keep it as an attachment file), unless
    it is a template's JSON data (``templates.apply`` bounds that). With ``file`` (the caller
    found ``body_is_file`` and stores the body) ``body`` is ignored: the message is
    ``X-Message`` or "" (``attachment.file_attachment`` gives ntfy's default)."""
    template = templates.mode(req.read(f.TEMPLATE))
    if file:
        body, template = b"", ""
    if not template:
        _check_size(req, body)
    out: dict[str, Any] = {}
    if sid := req.read(f.SEQUENCE_ID):
        out["sequence_id"] = check_sequence_id(sid)
    cache = req.read_bool(f.CACHE, True)
    firebase = req.read_bool(f.FIREBASE, True)
    for param in (f.TITLE, f.CLICK):
        if value := req.read(param):
            out[param.key] = value
    _attachment(req, out)
    if file:
        out.setdefault("attachment", {})
    if icon := req.read(f.ICON):
        if not _URL.match(icon):
            raise NtfyError(40021, f"{icon[:80]!r} is not an http(s) URL", field="icon")
        out["icon"] = icon
    if req.read(f.EMAIL):
        raise NtfyError(40001, "this server does not send e-mail", field="email")
    if req.read(f.CALL):
        raise NtfyError(40032, "this server does not make phone calls", field="call")
    message = req.read(f.MESSAGE).replace("\\n", "\n")
    priority = req.read(f.PRIORITY)
    out["priority"] = 3 if template == templates.INLINE else parse_priority(priority)
    if tags := [t.strip() for t in req.read(f.TAGS).split(",") if t.strip()]:
        out["tags"] = tags  # ntfy keeps a whitespace-only tag as ""; an empty tag is dropped
    delay = req.read(f.DELAY)
    if delay and not cache:
        raise NtfyError(40002, field="delay")
    if actions := req.read(f.ACTIONS):
        out["actions"] = parse_actions(actions)
    out.update(parse_ack(req))  # edgepush's X-Ack / X-Ack-Retry / X-Ack-Expire
    markdown = req.read_bool(f.MARKDOWN, False)
    ctype = req.read(f.CONTENT_TYPE).lower()
    if markdown or ctype == "text/markdown":
        out["content_type"] = "text/markdown"
    elif ctype == "application/jose":  # an end-to-end encrypted message (docs/E2E.md)
        out["encoding"] = "jwe"
    unifiedpush = req.read_bool(f.UNIFIEDPUSH, False)
    if unifiedpush or req.read(f.CONTENT_ENCODING) == "aes128gcm":
        unifiedpush, firebase = True, False
    poll_id = req.read(f.POLL_ID)
    if poll_id:
        unifiedpush, cache = False, False
    if template and not (poll_id or unifiedpush or "attachment" in out):
        # handlePublishBody's case 5: after poll requests, UnifiedPush and attachments
        _templated(req, out, template, body, message, priority)
    else:
        if template:  # asked for, but the body is not a template's data here
            _check_size(req, body)
            out["priority"] = parse_priority(priority)
        template = ""
        if file and not (poll_id or unifiedpush):
            out["message"] = message
        else:
            out["message"] = _body(out, body, message, unifiedpush=unifiedpush,
                                   poll=bool(poll_id))  # fmt: skip
    return Publish(out, cache, firebase, delay, template, unifiedpush, poll_id, file)


def _templated(
    req: Request, out: dict[str, Any], template: str, body: bytes, message: str, priority: str
) -> None:
    """Title, message (and priority) rendered from the JSON body (``templates.apply``)."""
    limit = req.max_value if req.max_value is not None else 4096
    text, title, prio = templates.apply(
        template, body, message=message, title=out.get("title", ""), priority=priority,
        limit=limit,
    )  # fmt: skip
    out.pop("title", None)
    if title:
        out["title"] = title
    if prio is not None:
        out["priority"] = parse_priority(prio)
    out["message"] = text or EMPTY_MESSAGE


def _check_size(req: Request, body: bytes) -> None:
    if req.max_value is not None and len(body) > req.max_value:
        raise NtfyError(41301, f"message is {len(body)} bytes, above the limit of "
                        f"{req.max_value}", field="message")  # fmt: skip


def check_sequence_id(sid: str) -> str:
    """ntfy 2.16's ``sequenceIDRegex`` (the topic rule: 1-64 of ``-_A-Za-z0-9``), else
    NtfyError 40049. The id ties an update, clear or delete to the notification it replaces."""
    if not TOPIC.fullmatch(sid):
        raise NtfyError(40049, f"{sid[:80]!r} is not 1-64 of A-Z a-z 0-9 - _", "sequence_id")
    return sid


def parse_priority(text: str) -> int:
    """ntfy's ``util.ParsePriority``: 1-5 or min/low/default/high/max/urgent; ``""`` is the
    default (3); anything else — ``0``, ``9``, ``05`` — NtfyError 40007."""
    if not text:
        return 3
    value = PRIORITIES.get(text.strip().lower())
    if value is None:
        raise NtfyError(40007, f"{text[:40]!r} is not 1-5 or a priority name", field="priority")
    return value


def _attachment(req: Request, out: dict[str, Any]) -> None:
    filename, attach = req.read(f.FILENAME), req.read(f.ATTACH)
    if not (filename or attach):
        return
    name = safe_name(filename)
    if attach:
        if not _URL.match(attach):
            raise NtfyError(40013, f"{attach[:80]!r} is not an http(s) URL", field="attachment")
        name = name or safe_name(_go_base(attach))
        out["attachment"] = {"name": name or "attachment", "url": attach}
    else:
        out["attachment"] = {"name": name}


def _go_base(url: str) -> str:
    # path.Base(url.Parse(u).Path), "" for "." and "/" (server.go parsePublishParams)
    path = url.split("://", 1)[1].partition("/")[2].split("?", 1)[0].split("#", 1)[0]
    path = path.rstrip("/")
    return path.rsplit("/", 1)[-1] if path else ""


def _body(out: dict[str, Any], body: bytes, header: str, *, unifiedpush: bool, poll: bool) -> str:
    """handlePublishBody: which of body and ``X-Message`` is the message."""
    if poll:
        return POLL_MESSAGE  # the body is discarded
    if unifiedpush:
        try:
            return body.decode("utf-8") or EMPTY_MESSAGE  # not trimmed
        except UnicodeDecodeError:
            out["encoding"] = "base64"
            return base64.b64encode(body).decode("ascii")
    attachment = out.get("attachment")
    if attachment is not None and "url" not in attachment:
        raise NtfyError(40014, "this server stores no attachment files", field="attachment")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        if attachment is not None:
            raise NtfyError(40011, f"byte {exc.start}", field="message") from None
        # ntfy would keep a non-UTF-8 body as an attachment file
        raise NtfyError(
            40014, f"the body is not UTF-8 text (byte {exc.start}) and this server stores "
            "no attachment files", field="message",
        ) from None  # fmt: skip
    message = text.strip() if body else header
    if not message and attachment is not None:
        message = f"You received a file: {attachment['name']}"
    return message or EMPTY_MESSAGE


def parse_json_publish(
    req: Request, body: bytes, *, max_size: int, files: bool = False
) -> tuple[str, Publish]:
    """``PUT/POST /`` with a JSON object: (topic, what it asks for). ``req`` is changed in
    place (its headers take the JSON fields). ``max_size`` is the body limit (ntfy: twice the
    message limit): 41303 above it; 40024 for JSON that is not ntfy's message object. With
    ``files`` (the caller stores files), a message that ``body_is_file`` is returned as
    ``upload``."""
    if len(body) > max_size:
        raise NtfyError(41303, f"{len(body)} bytes, above the limit of {max_size}", field="body")
    obj = _json_object(body)
    topic = obj.get("topic") or ""
    if not TOPIC.fullmatch(topic):
        raise NtfyError(40009, f"{topic[:40]!r}", field="topic")
    for key, (_, header) in _JSON.items():
        value = obj.get(key)
        if header and value not in (None, "", [], False, 0):
            req.set_header(header, _header_value(key, value))
    data = (obj.get("message") or EMPTY_MESSAGE).encode("utf-8", "surrogatepass")
    limit = req.max_value
    if files and body_is_file(req, data, truncated=limit is not None and len(data) > limit):
        return topic, replace(parse_publish(req, b"", file=True), upload=data)
    return topic, parse_publish(req, data)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
        obj = json.loads(text, parse_constant=_no_constant)
        check_unicode(text, obj, "body")
    except MessageError as exc:
        raise NtfyError(40024, str(exc), field="body") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise NtfyError(40024, field="body") from None
    if not isinstance(obj, dict):
        raise NtfyError(40024, "the body must be a JSON object", field="body")
    typed: dict[str, Any] = {}
    for key, value in obj.items():
        name = key.lower()  # Go's encoding/json matches field names case-insensitively
        if name not in _JSON or value is None:
            continue  # unknown keys are ignored; null leaves the zero value
        if isinstance(value, _Constant):
            raise NtfyError(40024, f"'{key}' holds {value.name}, which is not JSON", field=name)
        kind = _JSON[name][0]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is list and ok and name == "tags":
            ok = all(isinstance(t, str) for t in value)
        if not ok or (kind is int and not -(2**63) <= value < 2**63):
            raise NtfyError(40024, f"'{key}' must be {_GO_NAMES[kind]}", field=name)
        typed[name] = value
    # NaN/Infinity anywhere is a syntax error to Go's decoder (deep bodies under keys ntfy
    # ignores are valid: Go's decoder recurses 10,000 deep)
    if holds(obj, lambda v: isinstance(v, _Constant)):
        raise NtfyError(40024, "NaN and Infinity are not JSON", field="body")
    if "actions" in typed:
        typed["actions"] = check_types(typed["actions"], code=40024)
    return typed


class _Constant:
    """``NaN``/``Infinity`` as parsed (kept, not raised, so the error can name the key)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


_GO_NAMES = {str: "a string", int: "an integer", list: "an array", bool: "a boolean"}


def _header_value(key: str, value: Any) -> str:
    if key == "tags":
        return ",".join(value)
    if key == "markdown":
        return "yes"
    if key == "actions":
        # transformBodyJSON marshals the typed actions back to JSON for X-Actions
        return json.dumps(value)
    return str(value)


def _no_constant(name: str) -> Any:
    return _Constant(name)
