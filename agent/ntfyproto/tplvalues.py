"""Go's view of JSON values inside a template: printing, truth, comparison, type names.

ntfy decodes the body with Go's ``json.Unmarshal`` into ``any``: objects are maps, arrays
slices, every number a ``float64``. So ``{{.count}}`` of ``3`` prints ``3`` but of
``1700000000`` prints ``1.7e+09`` (Go's ``%v`` of a float64: shortest digits, an exponent from
1e+06 up or below 1e-04), and ``eq .count 3`` is Go's "incompatible types for comparison" (a
float64 against an int constant). A missing key and a JSON ``null`` print ``<no value>``.
Python: ``None`` is nil, ``float`` float64, ``int`` Go's int (constants, ``len``, math).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from contextvars import ContextVar
from decimal import Decimal
from typing import Any

from agent.ntfyproto.errors import NtfyError

MAX_PRINT_DEPTH = 64
MAX_TIME = 0.2
"""Seconds of Python one render may take (ntfy gives a render 100 ms). Steps alone do not
bound it: a step that prints a 10,000-item list is ~17 ms, and 300 of them were 5 s.

The render's own time: its thread's CPU time (``time.thread_time``), not the wall clock. A
render shares the interpreter with the relay's event loop and the store's threads, and the
machine with everything else: timed by the wall clock, an honest ~50 ms template was refused
when other clients' publishes kept the interpreter busy (12 of 15 at load ~6 on 2 cores)."""
_CHECK_EVERY = 64
"""Units of work (a step, an item of a list or map printed: each ~1-2 us) between two reads of
the clock: ``thread_time`` is a system call (~0.65 us here), too dear for every step."""


class _Clock:
    __slots__ = ("credit", "deadline")

    def __init__(self, deadline: float) -> None:
        self.deadline, self.credit = deadline, 0


_CLOCK: ContextVar[_Clock | None] = ContextVar("template_clock", default=None)


def fail(detail: str) -> NtfyError:
    return NtfyError(40045, detail, field="template")


@contextlib.contextmanager
def time_limit() -> Iterator[None]:
    """Within it, ``check_time`` fails once this thread has run ``MAX_TIME`` s of CPU."""
    token = _CLOCK.set(_Clock(time.thread_time() + MAX_TIME))
    try:
        yield
    finally:
        _CLOCK.reset(token)


def check_time(cost: int = 1) -> None:
    """40045 once the render's ``MAX_TIME`` is up. Called at each step (``cost`` 1) and for
    each list or map printed (its length: one ``printf`` of many lists is one step); the
    clock is read once ``_CHECK_EVERY`` units of work have passed since the last read."""
    clock = _CLOCK.get()
    if clock is None:
        return
    clock.credit -= cost
    if clock.credit > 0:
        return
    clock.credit = _CHECK_EVERY
    if time.thread_time() > clock.deadline:
        raise fail(f"the template took more than {MAX_TIME:g} s of rendering")


def gotype(v: Any) -> str:
    """The Go type name an error message would show."""
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "[]interface {}"
    return "map[string]interface {}"


def go_float(f: float, fmt: str = "v") -> str:
    """Go's ``%v`` of a float64 (``strconv.FormatFloat(f, 'g', -1, 64)``)."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if math.copysign(1, f) < 0 else "0"
    sign, digits, exp = Decimal(repr(f)).as_tuple()
    assert isinstance(exp, int)
    ds = "".join(map(str, digits)).rstrip("0") or "0"
    exp += len(digits) - len(ds)
    nd, dp = len(ds), len(ds) + exp
    neg = "-" if sign else ""
    x = dp - 1
    low, high = (-4, 6) if fmt == "v" else (-6, 21)  # %v, or encoding/json's rule
    if x < low or x >= high:
        mant = ds[0] + ("." + ds[1:] if nd > 1 else "")
        return f"{neg}{mant}e{'-' if x < 0 else '+'}{abs(x):02d}"
    if dp <= 0:
        return f"{neg}0.{'0' * -dp}{ds}"
    if dp >= nd:
        return neg + ds + "0" * (dp - nd)
    return f"{neg}{ds[:dp]}.{ds[dp:]}"


def go_str(v: Any, depth: int = 0) -> str:
    """Go's ``fmt.Sprint`` of a value (``<nil>`` for nil; the caller prints ``<no value>``)."""
    if depth > MAX_PRINT_DEPTH:
        raise fail(f"a value nested deeper than {MAX_PRINT_DEPTH} cannot be printed")
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return go_float(v)
    if isinstance(v, int | str):
        return str(v)
    check_time(len(v) + 1)
    if isinstance(v, list):
        return "[" + " ".join(go_str(x, depth + 1) for x in v) + "]"
    items = sorted(v.items())
    return "map[" + " ".join(f"{k}:{go_str(x, depth + 1)}" for k, x in items) + "]"


def truth(v: Any) -> bool:
    """Go's ``template.IsTrue``: false, 0, nil and empty strings, slices and maps are false."""
    if v is None:
        return False
    if isinstance(v, bool | int | float | str | list | dict):
        return bool(v)
    return True


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    return "other"


def equal(a: Any, b: Any) -> bool:
    """Go's ``eq`` for two values (nil equals only nil; kinds must match)."""
    if a is None or b is None:
        return a is None and b is None
    ka, kb = _kind(a), _kind(b)
    if ka == "other" or kb == "other":
        if type(a) is not type(b):
            raise fail("incompatible types for comparison")
        raise fail(f"non-comparable type {gotype(a)}")
    if ka != kb:
        raise fail(f"incompatible types for comparison: {gotype(a)} and {gotype(b)}")
    return bool(a == b)


def less(a: Any, b: Any) -> bool:
    """Go's ``lt``: ints, floats or strings of one kind."""
    ka, kb = _kind(a), _kind(b)
    if a is None or b is None or ka in ("bool", "other") or kb in ("bool", "other"):
        raise fail(f"invalid type for comparison: {gotype(a)}, {gotype(b)}")
    if ka != kb:
        raise fail(f"incompatible types for comparison: {gotype(a)} and {gotype(b)}")
    return bool(a < b)


def empty(v: Any) -> bool:
    """sprig's ``empty`` (what ``default`` tests): nil, zero, false, empty."""
    return not truth(v)


def to_json(v: Any, indent: int | None = None) -> str:
    """Go's ``json.Marshal`` of a decoded value (integral floats print without ``.0``)."""

    def go(x: Any, depth: int) -> Any:
        if depth > MAX_PRINT_DEPTH:
            raise fail(f"a value nested deeper than {MAX_PRINT_DEPTH} cannot be printed")
        if isinstance(x, float) and x.is_integer() and abs(x) < 1e21:
            return int(x)
        if isinstance(x, list):
            return [go(y, depth + 1) for y in x]
        if isinstance(x, dict):
            return {k: go(y, depth + 1) for k, y in x.items()}
        return x

    if isinstance(v, float) and not math.isfinite(v):
        raise fail("json: unsupported value")
    return json.dumps(go(v, 0), ensure_ascii=False, indent=indent, sort_keys=True,
                      separators=(",", ":") if indent is None else (",", ": "))  # fmt: skip


def to_int(v: Any) -> int:
    """spf13/cast's ``ToInt64`` as sprig's math uses it: floats truncate, junk is 0."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v) if math.isfinite(v) and abs(v) < 2**63 else 0
    if isinstance(v, str):
        try:
            return int(v.strip(), 0)
        except ValueError:
            return 0
    return 0


def to_float(v: Any) -> float:
    if isinstance(v, bool | int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return 0.0
    return 0.0


def go_quote(s: str) -> str:
    """Go's ``%q`` of a string (JSON-style escapes; close enough for messages)."""
    return json.dumps(s, ensure_ascii=False)
