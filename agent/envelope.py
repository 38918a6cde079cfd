"""The message envelope: ntfy's field names, decoded from any payload, never a crash.

Theory of operation
-------------------
A payload is bytes from a broker, a relay or a request body. ``decode`` turns it into a
``Message`` or raises ``MessageError`` naming the field that was wrong — nothing else ever
escapes (a hypothesis test feeds it arbitrary bytes). The rules, in order:

1. Larger than ``max_size``: rejected (``field="payload"``). An inline file, an
   ``attachment.url`` that is a base64 ``data:`` URL of at most 256 KiB (what the relay's
   bridge forwards upstream, ``agent.ntfyproto.attachment.INLINE_MAX``), does not count: it
   is bounded by its own cap, and the rest of the payload by ``max_size``.
2. Not UTF-8: rejected (``field="payload"``); the text of a notification must be text.
3. A JSON object carrying at least one envelope field: an envelope. Known fields are checked
   and normalised (priority words → numbers, out-of-range priorities clamped to 1..5, a tags
   string split on commas); unknown fields are kept in ``extra`` and written back out by
   ``encode``, so a newer publisher's fields survive a trip through an older agent.
4. Anything else (plain text, malformed JSON, a JSON array or number, an object with none of
   our fields such as a sensor's ``{"temp": 21}``): the whole text is the message.

A message without an id gets one; without a time, now. ``decode(encode(m)) == m``.

What JSON cannot round-trip is refused at decode, never found later at encode time (where it
would fail a whole batch, far from its cause). Each case, and why it goes where it goes:

* A number that overflows a double (``1e400``, ``-1e999``): valid JSON grammar, but Python
  reads it as ``inf``, which no JSON encoder may write back. MessageError naming the field
  (the JSON decoder's ``parse_float`` hook; nothing else pays for it).
* An integer outside 64 bits (``|n| >= 2**63``): Python keeps it exactly, but Go's ntfy, SQLite's
  JSON functions and JavaScript do not, so a relay or a peer would mangle or refuse it.
  MessageError naming the field (the ``parse_int`` hook).
* ``NaN``/``Infinity`` literals: not JSON at all, so the payload is not an envelope and the whole
  text is the message (rule 4), like any other malformed JSON.
* Nesting deeper than ``MAX_DEPTH`` levels (or so deep the decoder hits Python's recursion
  limit): no envelope nests like that, and re-encoding it could exceed the stack where the
  decoding did not; it is treated as plain text (rule 4), so it is stored, not lost.
* A ``\\u`` escape of a lone UTF-16 surrogate: MessageError (``check_unicode``).
* NUL and other control characters in text fields are kept (JSON allows them escaped; the
  store takes them); only a topic refuses them. Raw control bytes inside a JSON string are
  malformed JSON: plain text.

So ``encode_bytes(decode(x))`` cannot raise for any ``x`` that ``decode`` accepted (a hypothesis
test generates such JSON text), and ``from_fields`` checks the same for the structured fields
when it is handed a mapping from some other decoder.
"""

from __future__ import annotations

import json
import math
import os
import re
import string
import time as _time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from agent.errors import MessageError

# The JSON reader lives in agent.jsontext; its names are re-exported here, where the
# boundary's callers (ntfy frames, ntfyproto, the relay) have always looked for them.
from agent.jsontext import INT_LIMIT as INT_LIMIT
from agent.jsontext import MAX_DEPTH as MAX_DEPTH
from agent.jsontext import TooDeep as TooDeep
from agent.jsontext import check_unicode as check_unicode
from agent.jsontext import parse_json as parse_json
from agent.ntfyproto.attachment import INLINE_URL_MAX, inline_length

FIELDS = (
    "id",
    "time",
    "expires",
    "topic",
    "title",
    "message",
    "priority",
    "tags",
    "click",
    "actions",
    "attachment",
    "content_type",
)
DEFAULT_PRIORITY = 3
DEFAULT_MAX_SIZE = 256 * 1024
MAX_ID_LENGTH = 64
MAX_TOPIC_LENGTH = 256
PRIORITY_WORDS = {"min": 1, "low": 2, "default": 3, "high": 4, "urgent": 5, "max": 5}
_FIELD_SET = frozenset(FIELDS)
_ID_ALPHABET = string.ascii_letters + string.digits
_ID_CHARS = frozenset(_ID_ALPHABET + "-_.:")
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_ID_SPACE = len(_ID_ALPHABET) ** 12


def new_id() -> str:
    """A fresh 12-character id in ntfy's style (62^12 values: collisions are not a concern).

    128 random bits reduced mod 62^12 (the bias is below 2^-56), written in base 62: ~2 us,
    where twelve ``secrets.choice`` calls took ~17 us (half of decoding a plain-text payload).
    """
    n = int.from_bytes(os.urandom(16)) % _ID_SPACE
    out = []
    for _ in range(12):
        n, d = divmod(n, 62)
        out.append(_ID_ALPHABET[d])
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Message:
    """One push message. Field names and meanings follow ntfy's JSON message format."""

    id: str
    time: int
    topic: str
    message: str = ""
    title: str | None = None
    priority: int = DEFAULT_PRIORITY
    tags: tuple[str, ...] = ()
    click: str | None = None
    actions: tuple[dict[str, Any], ...] = ()
    attachment: dict[str, Any] | None = None
    content_type: str | None = None
    expires: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def with_topic(self, topic: str) -> Message:
        """The same message on another topic (used when a transport knows the real one)."""
        return replace(self, topic=check_topic(topic))


def encode(msg: Message) -> dict[str, Any]:
    """The envelope as a JSON-ready dict: ntfy's fields, empty ones left out, extras kept."""
    out: dict[str, Any] = dict(msg.extra)
    out["id"] = msg.id
    out["time"] = msg.time
    if msg.expires is not None:
        out["expires"] = msg.expires
    out["topic"] = msg.topic
    if msg.title is not None:
        out["title"] = msg.title
    out["message"] = msg.message
    out["priority"] = msg.priority
    if msg.tags:
        out["tags"] = list(msg.tags)
    if msg.click is not None:
        out["click"] = msg.click
    if msg.actions:
        out["actions"] = [dict(a) for a in msg.actions]
    if msg.attachment is not None:
        out["attachment"] = dict(msg.attachment)
    if msg.content_type is not None:
        out["content_type"] = msg.content_type
    return out


def encode_bytes(msg: Message) -> bytes:
    """The envelope as compact UTF-8 JSON, as published on the wire."""
    return dumps(encode(msg)).encode()


# One encoder for every call: json.dumps with non-default options builds a new encoder each
# time, which was a third of the store's per-message Python cost (bench/store_ingest.py).
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def dumps(obj: Any) -> str:
    """Compact JSON that refuses NaN/Infinity (they are not JSON and break equality)."""
    return _ENCODER.encode(obj)


def decode(
    payload: bytes | str, *, topic: str | None = None, max_size: int = DEFAULT_MAX_SIZE,
    now: int | None = None,
) -> Message:  # fmt: skip
    """Decode a payload into a Message (see the module docstring for the rules).

    ``topic`` is where the payload arrived; when given it wins over the envelope's own.
    Raises MessageError, and only MessageError, for anything it cannot accept.
    """
    found = decode_object(payload, topic=topic, max_size=max_size, now=now)
    return found if isinstance(found, Message) else from_fields(found, topic=topic, now=now)


def decode_object(
    payload: bytes | str, *, topic: str | None = None, max_size: int = DEFAULT_MAX_SIZE,
    now: int | None = None,
) -> Message | dict[str, Any]:  # fmt: skip
    """``decode`` up to the fields: plain text is its Message, an envelope the JSON object
    that ``from_fields`` checks next (agent.e2e.seal.arrival: a sealed one's outside)."""
    try:
        raw = payload.encode() if isinstance(payload, str) else payload
    except UnicodeEncodeError as exc:
        raise MessageError(
            f"payload has an unpaired UTF-16 surrogate (character {exc.start}): not Unicode text",
            field="payload",
        ) from None
    if len(raw) > max_size + INLINE_URL_MAX:
        raise _too_large(len(raw), max_size)
    try:
        text = raw.decode("utf-8") if isinstance(payload, bytes) else payload
    except UnicodeDecodeError as exc:
        raise MessageError(
            f"payload is not valid UTF-8 (byte {exc.start})", field="payload"
        ) from None
    obj = _json_object(text) if len(raw) <= max_size or b"data:" in raw else None
    if len(raw) > max_size and inline_length(obj) < len(raw) - max_size:
        raise _too_large(len(raw), max_size)
    if obj is None or _FIELD_SET.isdisjoint(obj):
        # Plain text: what from_fields({"message": text}) builds, without its field checks.
        return Message(
            id=new_id(),
            time=int(now or _time.time()),
            topic=check_topic(topic if topic is not None else ""),
            message=text,
        )
    return obj


def _json_object(text: str) -> dict[str, Any] | None:
    stripped = text.lstrip()
    if not stripped.startswith("{"):
        return None
    try:
        obj = parse_json(stripped, "payload")
    except ValueError:
        return None  # not JSON (NaN literals included) or too deep: plain text
    check_unicode(stripped, obj, "payload")
    return obj if isinstance(obj, dict) else None


def lenient_id(text: str) -> str | None:
    """The top-level ``id`` of JSON text that ``parse_json`` refused, when it has a usable one
    (so a rejected ntfy frame can still name its message and advance the cursor)."""
    lenient = json.JSONDecoder(parse_constant=lambda t: None, parse_float=lambda t: 0.0,
                               parse_int=lambda t: 0)  # fmt: skip
    try:
        obj = lenient.decode(text)
        return check_id(obj.get("id")) if isinstance(obj, dict) else None
    except (ValueError, RecursionError, MessageError):
        return None


def from_fields(
    obj: Mapping[str, Any], *, topic: str | None = None, now: int | None = None
) -> Message:
    """Build a Message from a mapping of envelope fields, checking each one.

    The per-message hot path of every transport (a relay replaying a backlog to an agent
    runs it once per frame): each check runs only for a field that is present (absent ones
    take their defaults), and each has an inline fast path for the value a well-behaved
    publisher sends (an ``int`` priority in 1..5, an alphanumeric id, a printable topic)
    that accepts exactly what the full check accepts; anything else goes to that check.
    """
    if type(obj) is dict and _FIELD_SET.issuperset(obj) and None not in obj.values():
        known: Mapping[str, Any] = obj  # only read below: no copy (the common case)
        extra: dict[str, Any] = {}
    elif type(obj) is dict and _encoded_only(obj):
        # An end-to-end encrypted message's outside (``encoding: jwe``, agent.e2e): the one
        # extra is plain, so neither _split nor _plain runs (~3 us of its decode in a drain).
        # ``known`` keeps the "encoding" member, which no check below reads.
        known, extra = obj, {"encoding": obj["encoding"]}
    else:
        known, extra = _split(obj)
    rare = not _RARE.isdisjoint(known)
    if rare:
        for name in ("actions", "attachment"):
            if name in known:
                _check_encodable(name, known[name])
    if extra and not _plain(extra):
        _check_encodable("extra", extra)
    # The checks in the order the fields are listed (which one a bad payload names first).
    get = known.get
    v = get("id")
    if v is None:
        mid = new_id()
    elif type(v) is str and 0 < len(v) <= MAX_ID_LENGTH and v.isascii() and v.isalnum():
        mid = v
    else:
        mid = check_id(v)
    t = get("time")
    if t is None:
        t = int(now or _time.time())
    elif type(t) is not int or not 0 <= t < 2**53:
        t = _int(known, "time")
    expires = _int(known, "expires") if rare and "expires" in known else None
    v = get("topic") if topic is None else topic
    if v is None:
        msg_topic = ""
    elif type(v) is str and len(v) <= MAX_TOPIC_LENGTH and v.isprintable():
        msg_topic = v  # printable text holds no control character
    else:
        msg_topic = check_topic(_str(known, "topic", "") if topic is None else v)
    title = get("title")
    if title is not None and type(title) is not str:
        title = _str(known, "title", None)
    text = get("message", "")
    if type(text) is not str:
        text = _message_text(known)
    p = get("priority")
    if p is None:
        p = DEFAULT_PRIORITY
    elif type(p) is not int or not 1 <= p <= 5:
        p = parse_priority(p)
    tags = get("tags")
    tags = _tags(tags) if tags is not None else ()
    if not rare:
        return _message(mid, t, msg_topic, text, title, p, tags, None, (), None, None, None, extra)
    return _message(
        mid, t, msg_topic, text, title, p, tags,
        _str(known, "click", None),
        _actions(a) if (a := get("actions")) is not None else (),
        _attachment(get("attachment")),
        _str(known, "content_type", None),
        expires,
        extra,
    )  # fmt: skip


_RARE = frozenset(("expires", "click", "actions", "attachment", "content_type"))
"""Fields most messages do not carry: ``from_fields`` skips their checks when none is there."""


_ENCODED_SET = _FIELD_SET | {"encoding"}


def _encoded_only(obj: dict[str, Any]) -> bool:
    """Envelope fields (none of them None) and an ASCII string ``encoding``, nothing else."""
    enc = obj.get("encoding")
    return (
        type(enc) is str and enc.isascii() and _ENCODED_SET.issuperset(obj)
        and None not in obj.values()
    )  # fmt: skip


def _split(obj: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Envelope fields (None values dropped: absent) and the rest (kept as ``extra``)."""
    known: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for k, v in obj.items():
        if k not in _FIELD_SET:
            extra[k] = v
        elif v is not None:
            known[k] = v
    return known, extra


_new = object.__new__
_set = object.__setattr__


def _message(
    mid: str, t: int, topic: str, text: str, title: str | None, priority: int,
    tags: tuple[str, ...], click: str | None, actions: tuple[dict[str, Any], ...],
    attachment: dict[str, Any] | None, content_type: str | None, expires: int | None,
    extra: dict[str, Any],
) -> Message:  # fmt: skip
    """``Message(...)`` from values already checked, for the hot paths (``from_fields``, the
    store's rows): the frozen dataclass's ``__init__`` sets each field through a global
    lookup of ``object.__setattr__``, 3.9 us against 2.4 us here (a third of a decode)."""
    m = _new(Message)
    _set(m, "id", mid)
    _set(m, "time", t)
    _set(m, "topic", topic)
    _set(m, "message", text)
    _set(m, "title", title)
    _set(m, "priority", priority)
    _set(m, "tags", tags)
    _set(m, "click", click)
    _set(m, "actions", actions)
    _set(m, "attachment", attachment)
    _set(m, "content_type", content_type)
    _set(m, "expires", expires)
    _set(m, "extra", extra)
    return m


def parse_priority(value: Any) -> int:
    """1..5 from a number, a numeric string or one of ntfy's words; out of range is clamped."""
    if isinstance(value, bool):
        raise MessageError(f"priority must be 1-5 or a word, not {value!r}", field="priority")
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in PRIORITY_WORDS:
            return PRIORITY_WORDS[word]
        if word.lstrip("-").isdigit() and len(word) < 10:
            value = int(word)
    if isinstance(value, int):
        return min(5, max(1, value))
    shown = repr(value)[:40]
    raise MessageError(
        f"priority must be 1-5 or one of {', '.join(PRIORITY_WORDS)}, not {shown}",
        field="priority",
    )


def check_id(value: Any) -> str:
    """An id is 1-64 characters of letters, digits and ``-_.:`` (safe in URLs and logs)."""
    if not isinstance(value, str) or not value:
        raise MessageError("id must be a non-empty string", field="id")
    if len(value) > MAX_ID_LENGTH or not _ID_CHARS.issuperset(value):
        raise MessageError(
            f"id must be at most {MAX_ID_LENGTH} letters, digits or -_.: characters", field="id"
        )
    return value


def check_topic(value: Any) -> str:
    """A topic is text up to 256 characters without control characters.

    Topics are stored as values, never spliced into SQL or paths, so ``../x`` is harmless
    here; the relay applies its own stricter rule to the topics in its URLs.
    """
    if not isinstance(value, str):
        raise MessageError("topic must be a string", field="topic")
    if len(value) > MAX_TOPIC_LENGTH:
        raise MessageError(f"topic is longer than {MAX_TOPIC_LENGTH} characters", field="topic")
    if _CONTROL.search(value):
        raise MessageError("topic contains control characters", field="topic")
    return value


def _plain(extra: Mapping[Any, Any]) -> bool:
    """Extras JSON always writes back: ASCII string keys with ASCII string or int values, as
    an encrypted message's ``encoding: jwe`` (the dump below cost ~5 us of its decode)."""
    return all(
        type(k) is str and k.isascii() and (type(v) is int or (type(v) is str and v.isascii()))
        for k, v in extra.items()
    )


def _check_encodable(name: str, value: Any) -> None:
    """A structured field that JSON can write back (a mapping from another decoder may hold
    ``inf`` or a lone surrogate); ours were checked at parse time, so this never fires there."""
    try:
        dumps(value).encode("utf-8")
    except (ValueError, TypeError, RecursionError, UnicodeEncodeError) as exc:
        shown = f"{type(exc).__name__}: {str(exc)[:60]}"
        raise MessageError(f"{name} cannot be written back as JSON ({shown})", field=name) from None


def _message_text(known: Mapping[str, Any]) -> str:
    value = known.get("message", "")
    if isinstance(value, float) and not math.isfinite(value):
        raise MessageError("message is a number that is not finite", field="message")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dumps(value)  # a bare number is a fine message ("21.5")
    if not isinstance(value, str):
        raise MessageError("message must be a string", field="message")
    return value


def _str(known: Mapping[str, Any], name: str, default: str | None) -> Any:
    value = known.get(name, default)
    if value is not None and not isinstance(value, str):
        raise MessageError(f"{name} must be a string, not {type(value).__name__}", field=name)
    return value


def _int(known: Mapping[str, Any], name: str) -> int:
    value = known[name]
    if isinstance(value, float) and math.isfinite(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise MessageError(f"{name} must be a unix time in seconds", field=name)
    return value


def _tags(value: Any) -> tuple[str, ...]:
    if type(value) is list and all(type(t) is str for t in value):
        return tuple(value)  # the common case first
    if isinstance(value, str):
        return tuple(t.strip() for t in value.split(",") if t.strip())
    if isinstance(value, (list, tuple)) and all(isinstance(t, str) for t in value):
        return tuple(value)
    raise MessageError("tags must be a list of strings or a comma-separated string", "tags")


def _actions(value: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(a, dict) for a in value):
        raise MessageError("actions must be a list of objects", field="actions")
    for action in value:
        if not isinstance(action.get("action"), str) or not isinstance(action.get("label"), str):
            raise MessageError("each action needs string 'action' and 'label'", "actions")
    return tuple(value)


def _too_large(size: int, max_size: int) -> MessageError:
    return MessageError(f"payload is {size} bytes, above the limit of {max_size}", "payload")


def _attachment(value: Any) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    raise MessageError("attachment must be an object", field="attachment")
