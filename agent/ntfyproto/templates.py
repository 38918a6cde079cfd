"""ntfy's message templating: ``X-Template`` / ``Template`` / ``tpl=`` on a JSON body.

What ntfy's server does (``server/server_templates.go``, 2.14+; server, not docs):

* ``X-Template: yes|1|true`` (also ``no|0|false``: any *bool word* selects inline mode —
  ntfy's ``templateMode.InlineMode`` is ``isBoolValue``, not ``toBool``) renders the
  ``X-Message``/``message=``, ``X-Title``/``title=`` and ``X-Priority``/``priority=`` values
  as Go templates on the body. Any other value names a template (``github``, ``grafana``,
  ``alertmanager``: ``tplnamed``); one that does not exist is 40046.
* The body must be JSON (40042), at most ``max(message limit, 32768)`` bytes (41303).
* The output of each is trimmed and a literal ``\\n`` becomes a newline; a title or message
  above the message limit is 40041; a rendered priority that is not a priority is 40007.
* An empty message becomes ``triggered`` afterwards, as for any publish.

The engine (``tplparse`` → ``tpleval`` with ``tplfuncs``) renders the subset of Go's
``text/template`` + sprig that docs/RELAY.md lists; anything else is refused with 40043 naming
it, ``template``/``define``/``block``/``call`` with 40044, a failing or runaway render with
40045. Nothing here raises anything but NtfyError.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agent.ntfyproto.errors import NtfyError
from agent.ntfyproto.tpleval import execute
from agent.ntfyproto.tplfuncs import NAMES
from agent.ntfyproto.tplnamed import NAMED
from agent.ntfyproto.tplparse import parse

BODY_LIMIT = 32768  # ntfy's jsonBodyBytesLimit (the body may be as large as the message limit)
INLINE = "inline"
_BOOL = frozenset({"1", "yes", "true", "0", "no", "false"})
_NAME = re.compile(r"[-_A-Za-z0-9]+")


def mode(value: str) -> str:
    """``""`` (off), ``INLINE``, or a template's name, from the ``X-Template`` value."""
    if not value:
        return ""
    return INLINE if value.lower() in _BOOL else value


def body_limit(message_limit: int) -> int:
    return max(message_limit, BODY_LIMIT)


def load(body: bytes) -> Any:
    """The body as Go's ``json.Unmarshal`` into ``any`` sees it (every number a float64, and
    a ``\\u`` escape of a lone surrogate U+FFFD, in keys too)."""
    text = body.decode("utf-8", "replace").strip()  # Go keeps invalid UTF-8 as U+FFFD
    try:
        data = json.loads(text, parse_int=float, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise NtfyError(40042, "the body is not valid JSON", field="body") from None
    # Only an escape makes a surrogate (the text itself was decoded as UTF-8 above). Kept,
    # one reached a response (an error quoting the data) that could not be encoded: a 500.
    return _go_strings(data) if _SURROGATE_ESCAPE.search(text) else data


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _go_strings(data: Any) -> Any:
    """``data`` with each lone surrogate in its strings and keys replaced by U+FFFD (a pair
    stays one character); iterative, since the JSON may nest as deep as json.loads allows."""
    root: list[Any] = [data]
    todo: list[tuple[list[Any] | dict[str, Any], Any]] = [(root, 0)]
    while todo:
        parent, key = todo.pop()
        value = parent[key]
        if isinstance(value, str):
            parent[key] = _text(value)
        elif isinstance(value, list):
            todo.extend((value, i) for i in range(len(value)))
        elif isinstance(value, dict):
            fixed = {_text(k): v for k, v in value.items()}
            parent[key] = fixed
            todo.extend((fixed, k) for k in fixed)
    return root[0]


def _text(text: str) -> str:
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def render(template: str, data: Any) -> str:
    """One template's output on ``data``: trimmed, ``\\n`` → newline, lone surrogates → U+FFFD."""
    if not template:
        return ""
    try:
        out = execute(parse(template, NAMES), data)
    except RecursionError:
        raise NtfyError(40045, "the template nests too deeply", field="template") from None
    out = out.replace("\\n", "\n").strip()
    return _text(out)


def apply(
    selected: str, body: bytes, *, message: str, title: str, priority: str, limit: int
) -> tuple[str, str, str | None]:
    """(message, title, priority text or None = keep the caller's) after templating.

    ``selected`` is ``mode()``'s answer; ``limit`` the message limit in bytes (40041 above it).
    """
    if len(body) > body_limit(limit):
        raise NtfyError(41303, f"{len(body)} bytes, above the limit of {body_limit(limit)}",
                        field="body")  # fmt: skip
    prio: str | None
    if selected == INLINE:
        data = load(body)
        message, title = render(message, data), render(title, data)
        prio = render(priority, data) if priority else None
    else:
        named = NAMED.get(selected) if _NAME.fullmatch(selected) else None
        if named is None:
            known = ", ".join(sorted(NAMED))
            raise NtfyError(40046, f"no template named {selected[:40]!r} (known: {known})",
                            field="template")  # fmt: skip
        data = load(body)
        message, title = render(named.message, data), render(named.title, data)
        prio = render(named.priority, data) if named.priority else None
    for what, text in (("title", title), ("message", message)):
        size = len(text.encode("utf-8"))
        if size > limit:
            raise NtfyError(40041, f"the {what} is {size} bytes, above {limit}", field=what)
    return message, title, prio
