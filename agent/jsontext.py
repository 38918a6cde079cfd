"""JSON text → a value JSON can write back: the one reader for foreign JSON, never a crash.

PURE (imports only ``agent.errors``). ``agent.envelope`` (payloads), ``agent.ntfy`` (stream
frames) and ``agent.ntfyproto`` (publish bodies, actions) read JSON through ``parse_json`` and
``check_unicode``; why each case is refused or kept as text is in ``agent.envelope``'s
docstring. The decoder's ``parse_float``/``parse_int`` hooks refuse ``1e400`` and ints beyond
64 bits at parse time; depth is decided from the text before decoding (so the verdict does not
depend on the caller's stack); lone surrogate escapes are refused by ``check_unicode``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from agent.errors import MessageError

MAX_DEPTH = 64
"""Deepest nesting of arrays/objects kept as an envelope (ntfy's own messages nest 3 deep)."""
INT_LIMIT = 2**63


def parse_json(text: str, what: str) -> Any:
    """JSON text to a value JSON can write back, or an error saying why not.

    Raises MessageError (``field`` the top-level key holding it, else ``what``) for a number
    that is not finite as a double or an integer outside 64 bits; ValueError for text that is
    not JSON or nests deeper than MAX_DEPTH (the caller decides what that means: plain text
    for a payload, a broken stream for an ntfy frame). Nothing else.
    """
    # Counted once (four str.count passes over every frame were ~0.3 us of a relay frame's
    # ~7 us parse); only text with more opening brackets than MAX_DEPTH can nest that deep.
    bracketed = text.count("[") + text.count("{") > MAX_DEPTH
    if bracketed and _text_depth(text) > MAX_DEPTH:
        # Decided on the text, before decoding: whether the decoder meets a bad number or
        # Python's recursion limit first depends on the caller's stack depth, and the same
        # payload must get the same verdict in every process (the relay and its tests).
        raise TooDeep(f"nested deeper than {MAX_DEPTH} levels")
    try:
        obj = _DECODER.decode(text)
    except _Unrepresentable as exc:
        key = _key_of_bad(text)
        where = f"field {key!r}" if key is not None else what
        raise MessageError(
            f"{where} holds the number {exc.args[0]}, which {exc.args[1]}: "
            "JSON cannot carry it back out",
            field=key or what,
        ) from None
    except RecursionError:
        raise TooDeep(f"nested too deeply (over {MAX_DEPTH} levels)") from None
    if bracketed and _depth(obj) > MAX_DEPTH:
        raise TooDeep(f"nested deeper than {MAX_DEPTH} levels")
    return obj


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def _text_depth(text: str) -> int:
    """The deepest nesting of brackets in JSON text, strings left out (only for text with
    more than MAX_DEPTH opening brackets, so ordinary payloads never pay for it)."""
    depth = deepest = 0
    for m in _BRACKET.finditer(_STRING.sub("", text)):
        if m.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


class TooDeep(ValueError):
    """JSON nested deeper than MAX_DEPTH: well-formed, but not something we keep as JSON."""


class _Unrepresentable(Exception):
    """Raised inside the JSON decoder by its hooks (not a ValueError: json must not mask it)."""


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):
        raise _Unrepresentable(_short(text), "overflows a double (it reads as infinity)")
    return value


def _parse_int(text: str) -> int:
    if len(text) < 19:  # at most 18 digits: always within 64 bits (the common case, ~0.2 us)
        return int(text)
    if len(text) - text.startswith("-") > 19 or not -INT_LIMIT <= (value := int(text)) < INT_LIMIT:
        raise _Unrepresentable(_short(text), "is beyond 64 bits")
    return value


def _short(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:12]}...({len(text)} characters)"


_BAD = object()


def _key_of_bad(text: str) -> str | None:
    """The top-level key whose value holds the unrepresentable number (the error path only)."""
    lenient = json.JSONDecoder(
        parse_constant=_reject_constant,
        parse_float=lambda t: _BAD if math.isinf(float(t)) else 0.0,
        parse_int=lambda t: _BAD if len(t) > 19 or abs(int(t)) >= INT_LIMIT else 0,
    )
    try:
        obj = lenient.decode(text)
    except (ValueError, RecursionError):
        return None
    if isinstance(obj, dict):
        for key, value in obj.items():
            if holds(value, lambda v: v is _BAD):
                return str(key)
    return None


def holds(value: Any, test: Callable[[Any], bool]) -> bool:
    """Whether any value nested in a decoded JSON ``value`` passes ``test``. A loop, not
    recursion: an 8 KB body nests 4,000 deep, past what Python's stack can recurse through."""
    stack = [value]
    while stack:
        v = stack.pop()
        if test(v):
            return True
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def _depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value, without recursion (it may be deep)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            deepest = max(deepest, d)
            stack.extend((c, d + 1) for c in v.values())
        elif isinstance(v, list):
            deepest = max(deepest, d)
            stack.extend((c, d + 1) for c in v)
    return deepest


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def check_unicode(text: str, obj: Any, field: str) -> None:
    """Reject JSON whose ``\\u`` escapes decode to an unpaired UTF-16 surrogate.

    ``json.loads('"\\ud800"')`` succeeds, but the result is not Unicode text: it cannot be
    encoded as UTF-8, so SQLite (and D-Bus, and a terminal) would fail on it far from here.
    Raw bytes cannot carry one (they were UTF-8-decoded already), so only the escape needs
    looking for; a paired escape (an emoji as ``\\ud83d\\ude00``) decodes to one valid
    character and passes.
    """
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        try:
            _LAX.encode(obj).encode("utf-8")
        except UnicodeEncodeError:  # before ValueError, of which it is a subclass
            raise MessageError(
                f"{field} has an unpaired UTF-16 surrogate escape (\\ud800-\\udfff): "
                "not Unicode text",
                field=field,
            ) from None
        except (ValueError, RecursionError, TypeError):
            # NaN, depth or a placeholder object from another decoder (ntfyproto keeps NaN as
            # one to name its key): not this check's to judge (from_fields / its caller)
            pass


# check_unicode's encoder: NaN allowed, so the only thing it can find is the surrogate.
_LAX = json.JSONEncoder(ensure_ascii=False, allow_nan=True)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One decoder for every call: json.loads with an option builds a new decoder each time.
# The hooks cost a Python call per number (~0.2 us; an envelope has two or three); a regex
# looking for long digit runs first cost more than that (~2 us per payload).
_DECODER = json.JSONDecoder(
    parse_constant=_reject_constant, parse_float=_parse_float, parse_int=_parse_int
)
