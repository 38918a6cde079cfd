"""ntfy's ``Actions`` header: the simple form and the JSON form, parsed and validated as
ntfy's server does (``server/actions.go``, ``parseActions``).

Simple form (``;`` between actions, ``,`` between sections)::

    view, Open portal, https://home.nest.com/, clear=true
    action=http, label="Close door", url=https://x/door, method=PUT, headers.Authorization=t
    broadcast, Take picture, extras.cmd=pic; view, 'Look ma, commas', https://x

A section is ``key=value`` (key: ``[-.\\w]+``) or a bare value; bare values are, in order,
``action``, ``label`` and — compared *before* lowercasing, as the server does — ``url`` for
``view``/``http`` or ``value`` for ``copy``; any other bare value is an error. A value may
be quoted with ``"`` or ``'`` (``\\"`` inside is a quote) to hold ``,`` and ``;``; unquoted
values are trimmed.
``headers.X=`` / ``extras.X=`` fill those maps; ``clear`` is a bool (true/yes/1/false/no/0).

JSON form: a string starting with ``[``: a list of action objects, typed as ntfy's Go struct
(strings, ``clear`` a bool, ``headers``/``extras`` string maps; keys matched case-insensitively
and unknown keys dropped, as Go's ``encoding/json`` does).

Then, for both: each action gets a fresh 10-character ``id``, ``action`` lowercased, ``method``
uppercased; at most 3; ``action`` one of view/broadcast/http/copy (``copy``: ntfy 2.16, puts
``value`` on the clipboard); ``label`` required; ``url`` required for view/http, ``value`` for
copy; no ``body`` with an http GET/HEAD. Every failure is NtfyError 40018
with ntfy's detail text. Positions in messages count characters (ntfy counts bytes).
"""

from __future__ import annotations

import json
import re
import secrets
import string
from typing import Any

from agent.envelope import check_unicode
from agent.errors import MessageError
from agent.ntfyproto.errors import NtfyError

MAX_ACTIONS = 3
TYPES = ("view", "broadcast", "http", "copy")
_WITH_URL = ("view", "http")
_WITH_VALUE = ("copy",)
_KEY = re.compile(r"([-.\w]+)\s*=\s*", re.ASCII)
_SPACE = " \t\r\n"
_STRINGS = ("id", "action", "label", "url", "method", "body", "intent", "value")
_MAPS = ("headers", "extras")
_ID_CHARS = string.ascii_letters + string.digits


def parse_actions(text: str) -> list[dict[str, Any]]:
    """Actions from a header value (either form), validated; NtfyError 40018 if not."""
    text = text.strip()
    try:
        actions = _from_json(text) if text.startswith("[") else _Simple(text).parse()
        return validate(actions)
    except _Invalid as exc:
        raise NtfyError(40018, str(exc), field="actions") from None


def check_types(value: Any, code: int) -> list[dict[str, Any]]:
    """A decoded JSON list of action objects typed as ntfy's ``action`` struct (not yet
    validated: ``parse_actions`` does that); NtfyError ``code`` for a type error (40024 from
    a JSON publish body, whose decode into Go structs fails first)."""
    try:
        return _typed(value)
    except _Invalid as exc:
        raise NtfyError(code, str(exc), field="actions") from None


class _Invalid(Exception):
    pass


def validate(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ntfy's normalisation and checks; returns the actions as ntfy sends them."""
    out = [_normalised(a) for a in actions]
    if len(out) > MAX_ACTIONS:
        raise _Invalid(f"only {MAX_ACTIONS} actions allowed")
    for a in out:
        kind = a["action"]
        if kind not in TYPES:
            raise _Invalid(
                f"parameter 'action' cannot be '{kind}', valid values are 'view', "
                "'broadcast', 'http' and 'copy'"
            )
        if not a["label"]:
            raise _Invalid("parameter 'label' is required")
        if kind in _WITH_URL and not a.get("url"):
            raise _Invalid(f"parameter 'url' is required for action '{kind}'")
        if kind in _WITH_VALUE and not a.get("value"):
            raise _Invalid(f"parameter 'value' is required for action '{kind}'")
        if kind == "http" and a.get("method") in ("GET", "HEAD") and a.get("body"):
            raise _Invalid(f"parameter 'body' cannot be set if method is {a['method']}")
    return out


def _normalised(a: dict[str, Any]) -> dict[str, Any]:
    # Go's json.Marshal of the action struct: id, action, label, clear always; the rest
    # only when non-empty (omitempty)
    out: dict[str, Any] = {
        "id": "".join(secrets.choice(_ID_CHARS) for _ in range(10)),
        "action": a.get("action", "").lower(),
        "label": a.get("label", ""),
        "clear": bool(a.get("clear", False)),
    }
    for key in ("url", "method", "headers", "body", "intent", "extras", "value"):
        value = a.get(key)
        if value:
            out[key] = value.upper() if key == "method" else value
    return out


def _from_json(text: str) -> list[dict[str, Any]]:
    try:
        value = json.loads(text, parse_constant=_no_constant)
        check_unicode(text, value, "actions")
    except MessageError as exc:
        raise _Invalid(f"JSON error: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise _Invalid(f"JSON error: {exc}") from None
    return _typed(value)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _typed(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise _Invalid("JSON error: actions must be an array of objects")
    return [_typed_one(item, i) for i, item in enumerate(value)]


def _typed_one(item: Any, i: int) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise _Invalid(f"JSON error: action {i} is not an object")
    out: dict[str, Any] = {}
    for key, value in item.items():
        name = key.lower()  # Go matches struct fields case-insensitively
        if value is None or name not in (*_STRINGS, "clear", *_MAPS):
            continue  # null leaves the zero value; unknown keys are dropped
        if name == "clear":
            ok = isinstance(value, bool)
        elif name in _MAPS:
            ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        else:
            ok = isinstance(value, str)
        if not ok:
            raise _Invalid(f"JSON error: action {i}: '{key}' has the wrong type")
        out[name] = dict(value) if name in _MAPS else value
    return out


class _Simple:
    """The simple form's scanner (ntfy's ``actionParser``): a position moving through text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def parse(self) -> list[dict[str, Any]]:
        actions = []
        while self.pos < len(self.text):
            actions.append(self._action())
        return actions

    def _action(self) -> dict[str, Any]:
        action: dict[str, Any] = {"headers": {}, "extras": {}}
        section = 0
        while True:
            key, value, last = self._section()
            _populate(action, section, key, value)
            self._spaces()
            if last:
                return action
            section += 1

    def _section(self) -> tuple[str, str, bool]:
        self._spaces()
        key = ""
        m = _KEY.match(self.text, self.pos)
        if m:
            key = m.group(1)
            self.pos = m.end()
        r = self._peek()
        if r in ("", ";", ","):
            self.pos += len(r)
            return key, "", r in ("", ";")
        if r in ('"', "'"):
            value, last = self._quoted(r)
            return key, value, last
        start = self.pos
        while (r := self._peek()) not in ("", ";", ","):
            self.pos += 1
        value = self.text[start : self.pos].strip(_SPACE)
        self.pos += len(r)
        return key, value, r in ("", ";")

    def _quoted(self, quote: str) -> tuple[str, bool]:
        self.pos += 1
        start = self.pos
        prev = ""
        while True:
            r = self._peek()
            if not r:
                raise _Invalid(f"unexpected end of input, quote started at position {start}")
            if r == quote and prev != "\\":
                value = self.text[start : self.pos].replace("\\" + quote, quote)
                self.pos += 1
                self._spaces()
                end = self._peek()
                if end not in ("", ";", ","):
                    raise _Invalid(f"unexpected character '{end}' at position {self.pos}")
                self.pos += len(end)
                return value, end in ("", ";")
            prev = r
            self.pos += 1

    def _spaces(self) -> None:
        while self._peek() and self._peek() in _SPACE:
            self.pos += 1

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""


def _populate(action: dict[str, Any], section: int, key: str, value: str) -> None:
    """ntfy's ``populateAction``: a bare value by its position, else by its key."""
    if not key:
        if section == 0:
            key = "action"
        elif section == 1:
            key = "label"
        elif section == 2 and action.get("action") in _WITH_URL:  # before lowercasing
            key = "url"
        elif section == 2 and action.get("action") in _WITH_VALUE:
            key = "value"
        else:
            raise _Invalid(f"term '{value}' unknown")
    if key.startswith("headers."):
        action["headers"][key.removeprefix("headers.")] = value
    elif key.startswith("extras."):
        action["extras"][key.removeprefix("extras.")] = value
    elif (name := key.lower()) == "clear":
        if value.lower() not in ("true", "yes", "1", "false", "no", "0"):
            raise _Invalid(
                f"parameter 'clear' cannot be '{value}', only boolean values are allowed "
                "(true/yes/1/false/no/0)"
            )
        action["clear"] = value.lower() in ("true", "yes", "1")
    elif name in ("action", "label", "url", "method", "body", "intent", "value"):
        action[name] = value
    else:
        raise _Invalid(f"key '{key}' unknown")
