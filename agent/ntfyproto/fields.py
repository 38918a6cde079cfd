"""ntfy's request parameters as one table, and ``readParam`` — how ntfy's server reads them.

Each ``Param`` lists the names ntfy's server passes to ``readParam``/``readBoolParam``
(``server/server.go``, ``server/types.go``), in its order. The rule (``server/util.go``):

1. each name in turn as a header (case-insensitive, the first value): the value is RFC 2047
   decoded (``=?UTF-8?B?...?=``, Go's ``mime.WordDecoder``; undecodable text is kept as it
   came) and trimmed; the first non-empty one wins;
2. else each name in turn, lowercased, as a query parameter (so ``?x-title=`` works too),
   trimmed; the first non-empty one wins.

A ``Priority`` *header* that is RFC 9218's (``u=3``, ``u=3, i``; added by Cloudflare and other
proxies) is not a priority: ntfy ignores it and reads on (``X-Priority``, ``prio``, query).
A bool is true only for ``1``, ``yes`` or ``true`` (any case): ntfy's ``toBool``, so
``Cache: off`` means *no* cache, as on ntfy.
"""

from __future__ import annotations

import email.errors
import email.header
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agent.ntfyproto.errors import NtfyError

_RFC9218 = re.compile(r"u=\d,\s*(?:i|\d)|u=\d", re.ASCII)  # Go's \d is ASCII
_TRUE = frozenset({"1", "yes", "true"})
_BOOL = frozenset({"1", "yes", "true", "0", "no", "false"})


@dataclass(frozen=True, slots=True)
class Param:
    """One request parameter: our name, ntfy's ``readParam`` names, its JSON key if any."""

    key: str
    names: tuple[str, ...]
    json: str | None = None


def _p(key: str, *names: str, json: str | None = None) -> Param:
    return Param(key, names, json)


# Publish (parsePublishParams, server.go). JSON keys: publishMessage (types.go), which
# transformBodyJSON turns into the X- header named first.
TITLE = _p("title", "x-title", "title", "t", json="title")
CLICK = _p("click", "x-click", "click", json="click")
ICON = _p("icon", "x-icon", "icon", json="icon")
FILENAME = _p("filename", "x-filename", "filename", "file", "f", json="filename")
ATTACH = _p("attach", "x-attach", "attach", "a", json="attach")
EMAIL = _p("email", "x-email", "x-e-mail", "email", "e-mail", "mail", "e", json="email")
CALL = _p("call", "x-call", "call", json="call")
MESSAGE = _p("message", "x-message", "message", "m", json="message")
PRIORITY = _p("priority", "x-priority", "priority", "prio", "p", json="priority")
TAGS = _p("tags", "x-tags", "tags", "tag", "ta", json="tags")
DELAY = _p("delay", "x-delay", "delay", "x-at", "at", "x-in", "in", json="delay")
ACTIONS = _p("actions", "x-actions", "actions", "action", json="actions")
CONTENT_TYPE = _p("content_type", "content-type", "content_type")
MARKDOWN = _p("markdown", "x-markdown", "markdown", "md", json="markdown")
TEMPLATE = _p("template", "x-template", "template", "tpl")
UNIFIEDPUSH = _p("unifiedpush", "x-unifiedpush", "unifiedpush", "up")
CONTENT_ENCODING = _p("content_encoding", "content-encoding")
POLL_ID = _p("poll_id", "x-poll-id", "poll-id")
# ntfy 2.16: readParam(r, "x-sequence-id", "sequence-id", "sid"); JSON publishMessage.SequenceID
SEQUENCE_ID = _p("sequence_id", "x-sequence-id", "sequence-id", "sid", json="sequence_id")
# edgepush's acknowledge-until-acked (agent.ntfyproto.ack); ntfy reads none of these names
ACK = _p("ack", "x-ack", "ack", json="ack")
ACK_RETRY = _p("ack_retry", "x-ack-retry", "ack-retry", json="ack_retry")
ACK_EXPIRE = _p("ack_expire", "x-ack-expire", "ack-expire", json="ack_expire")
CACHE = _p("cache", "x-cache", "cache", json="cache")
FIREBASE = _p("firebase", "x-firebase", "firebase", json="firebase")
# Subscribe (handleSubscribeHTTP, parseSince, parseQueryFilters)
SINCE = _p("since", "x-since", "since", "si")
POLL = _p("poll", "x-poll", "poll", "po")
SCHEDULED = _p("scheduled", "x-scheduled", "scheduled", "sched")
FILTER_ID = _p("id", "x-id", "id")

PUBLISH = (TITLE, CLICK, ICON, FILENAME, ATTACH, EMAIL, CALL, MESSAGE, PRIORITY, TAGS, DELAY,
           ACTIONS, CONTENT_TYPE, MARKDOWN, TEMPLATE, UNIFIEDPUSH, CONTENT_ENCODING, POLL_ID,
           SEQUENCE_ID, ACK, ACK_RETRY, ACK_EXPIRE,
           CACHE, FIREBASE)  # fmt: skip
SUBSCRIBE = (SINCE, POLL, SCHEDULED, FILTER_ID, MESSAGE, TITLE, TAGS, PRIORITY)


class Request:
    """The parts of an HTTP request ntfy's parameters come from (no I/O: plain values).

    ``headers``: (name, value) pairs or a mapping; the first value of a name counts, as with
    Go's ``Header.Get``. ``query``: a mapping of decoded query parameters (first value).
    ``max_value``: bytes any one value may hold (NtfyError 413 above it), so a header or a
    query parameter is bounded like the body is.
    """

    __slots__ = ("_headers", "_query", "max_value")

    def __init__(
        self,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        query: Mapping[str, str] | None = None,
        *,
        max_value: int | None = None,
    ) -> None:
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        self._headers: dict[str, str] = {}
        for name, value in pairs:
            self._headers.setdefault(name.lower(), value)
        self._query = dict(query or {})
        self.max_value = max_value

    def header(self, name: str) -> str | None:
        return self._headers.get(name.lower())

    def set_header(self, name: str, value: str) -> None:
        """Replace a header (what ntfy's ``transformBodyJSON`` does with ``r.Header.Set``)."""
        self._headers[name.lower()] = value

    def read(self, param: Param) -> str:
        """ntfy's ``readParam``: the value, or ``""`` when no name carries one."""
        for name in param.names:
            raw = self._headers.get(name)
            if raw is not None:
                value = _special(name, decode_header(raw)).strip()
                if value:
                    return self._bounded(value, param)
        for name in param.names:
            raw = self._query.get(name.lower())
            if raw is not None and raw.strip():
                return self._bounded(raw.strip(), param)
        return ""

    def read_bool(self, param: Param, default: bool) -> bool:
        """ntfy's ``readBoolParam``: absent → ``default``; else true only for 1/yes/true."""
        value = self.read(param).lower()
        return default if not value else value in _TRUE

    def _bounded(self, value: str, param: Param) -> str:
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:  # a header's bytes that were not UTF-8 (surrogateescape)
            raise NtfyError(40000, f"{param.key} is not valid UTF-8", field=param.key) from None
        if self.max_value is not None and size > self.max_value:
            raise NtfyError(
                41301, f"{param.key} is {size} bytes, above the limit of {self.max_value}",
                field=param.key,
            )  # fmt: skip
        return value


def is_bool(value: str) -> bool:
    """ntfy's ``isBoolValue`` (used to tell ``Call: yes`` from a phone number)."""
    return value.lower() in _BOOL


def decode_header(value: str) -> str:
    """RFC 2047 encoded words decoded (``=?UTF-8?B?SGk=?=`` → ``Hi``); anything that does not
    decode is kept as it came, as Go's ``mime.WordDecoder.DecodeHeader`` error path does."""
    if "=?" not in value:
        return value
    try:
        parts = email.header.decode_header(value)
        return str(email.header.make_header(parts))
    except (email.errors.HeaderParseError, LookupError, UnicodeError, ValueError):
        return value


def _special(name: str, value: str) -> str:
    # maybeIgnoreSpecialHeader: only the header named exactly "priority" (any case)
    if name == "priority" and _RFC9218.fullmatch(value.strip()):
        return ""
    return value
