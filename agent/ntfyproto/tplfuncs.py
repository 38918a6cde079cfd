"""The functions a template may call: Go's builtins and the sprig functions ntfy templates use.

Each entry is ``(python function, parameter kinds, variadic kind or None)``; a kind is ``a``
(any value, nil too), ``s`` (a string), ``i`` (an int) or ``b`` (a bool). Arguments are
checked as Go's ``text/template`` checks them, so ``{{.missing | upper}}`` fails ("invalid value;
expected string") as on ntfy, while ``{{.missing | default "x"}}`` works. ``and``/``or`` are
short-circuit and live in the evaluator.

Bounded: no function may build a string above ``MAX_VALUE`` bytes or a list above
``MAX_ITEMS`` (``repeat``, ``indent``, ``printf`` widths, ``cat``...): such a call fails with
40045 before it allocates, so a template cannot grow memory by doubling a variable in a loop.
Functions outside this table are not defined (40043, Go's "function not defined").
"""

from __future__ import annotations

import base64
import binascii
import html
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

from agent.ntfyproto.tplvalues import (
    empty,
    equal,
    fail,
    go_float,
    go_quote,
    go_str,
    gotype,
    less,
    to_float,
    to_int,
    to_json,
    truth,
)  # fmt: skip

MAX_VALUE = 256 * 1024
MAX_ITEMS = 10_000
Func = Callable[..., Any]


def sized(n: int) -> int:
    if n > MAX_VALUE:
        raise fail(f"a value of {n} bytes would be above the limit of {MAX_VALUE}")
    return n


def _len(v: Any) -> int:
    if isinstance(v, str):
        return len(v.encode("utf-8", "surrogatepass"))
    if isinstance(v, list | dict):
        return len(v)
    raise fail(f"len of type {gotype(v)}")


def _index(v: Any, *keys: Any) -> Any:
    for key in keys:
        if v is None:
            raise fail("index of untyped nil")
        if isinstance(v, list | str):
            if isinstance(key, bool) or not isinstance(key, int):
                raise fail(f"cannot index slice/array with type {gotype(key)}")
            if not 0 <= key < len(v):
                raise fail(f"index out of range: {key}")
            v = v[key] if isinstance(v, list) else ord(v[key])
        elif isinstance(v, dict):
            if not isinstance(key, str):
                raise fail(f"value has type {gotype(key)}; should be string")
            v = v.get(key)
        else:
            raise fail(f"can't index item of type {gotype(v)}")
    return v


def _sprint(*args: Any) -> str:
    # fmt.Sprint: a space between operands when neither is a string
    out: list[str] = []
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(go_str(a))
    return "".join(out)


_VERB = re.compile(r"%([-+# 0]*)(\*|\d*)(?:\.(\*|\d*))?(.)|%$", re.S)


def printf(format_: str, *args: Any) -> str:
    """Go's ``fmt.Sprintf`` for the common verbs (``%s %v %d %f %e %g %q %t %x %X %o %b
    %c %%``); a width or precision of 1000 or more is refused (ntfy's guard)."""
    pos = 0

    def one(m: re.Match[str]) -> str:
        nonlocal pos
        if m.group(4) is None:
            return "%!(NOVERB)"
        flags, width, prec, verb = m.group(1), m.group(2), m.group(3), m.group(4)
        if verb == "%":
            return "%"
        if "*" in (width, prec) or len(width) > 3 or len(prec or "") > 3:
            raise fail("printf width or precision too large")
        if pos >= len(args):
            return f"%!{verb}(MISSING)"
        arg = args[pos]
        pos += 1
        text = _verb(verb, arg, int(prec) if prec else None if prec is None else 0, flags)
        return _pad(text, int(width or 0), flags, verb)

    out = _VERB.sub(one, format_)
    if pos < len(args):
        out += "%!(EXTRA " + ", ".join(f"{gotype(a)}={go_str(a)}" for a in args[pos:]) + ")"
    sized(len(out))
    return out


def _bad(verb: str, arg: Any) -> str:
    return f"%!{verb}(<nil>)" if arg is None else f"%!{verb}({gotype(arg)}={go_str(arg)})"


def _verb(verb: str, arg: Any, prec: int | None, flags: str) -> str:
    is_int = isinstance(arg, int) and not isinstance(arg, bool)
    if verb == "v" or (verb == "s" and isinstance(arg, list | dict)):
        return go_str(arg)
    if verb == "s":
        return (
            arg[:prec]
            if isinstance(arg, str) and prec is not None
            else (arg if isinstance(arg, str) else _bad(verb, arg))
        )
    if verb == "q":
        return (
            go_quote(arg)
            if isinstance(arg, str)
            else go_quote(chr(arg))
            if is_int and 0 <= arg <= 0x10FFFF
            else _bad(verb, arg)
        )
    if verb == "t":
        return go_str(arg) if isinstance(arg, bool) else _bad(verb, arg)
    if verb in "dboxXc" and is_int:
        sign = "+" if "+" in flags and arg >= 0 else " " if " " in flags and arg >= 0 else ""
        if verb == "c":
            return chr(arg) if 0 <= arg <= 0x10FFFF else "\ufffd"
        return sign + format(arg, {"d": "d", "b": "b", "o": "o", "x": "x", "X": "X"}[verb])
    if verb in "xX" and isinstance(arg, str):
        out = arg.encode("utf-8", "surrogatepass").hex()
        return out.upper() if verb == "X" else out
    if verb in "feEgG" and isinstance(arg, float):
        if verb in "gG" and prec is None:
            return go_float(arg)
        sign = "+" if "+" in flags else ""
        return format(arg, f"{sign}.{6 if prec is None else prec}{verb}")
    return _bad(verb, arg)


def _pad(text: str, width: int, flags: str, verb: str) -> str:
    if len(text) >= width:
        return text
    if "-" in flags:
        return text.ljust(width)
    if "0" in flags and verb in "dboxXfeEgG" and not text.startswith("%!"):
        sign = text[:1] if text[:1] in "+- " else ""
        return sign + text[len(sign) :].rjust(width - len(sign), "0")
    return text.rjust(width)


def _title(s: str) -> str:
    # strings.Title: a letter after a separator is upper-cased; ASCII letters, digits and
    # "_" (and any non-ASCII letter or digit) are not separators
    out, prev_sep = [], True
    for ch in s:
        out.append(ch.upper() if prev_sep else ch)
        prev_sep = not (ch.isalnum() or ch == "_")
    return "".join(out)


def _trunc(c: int, s: str) -> str:
    if c < 0 and len(s) + c > 0:
        return s[len(s) + c :]
    return s[:c] if 0 <= c < len(s) else s


def _abbrev(width: int, s: str) -> str:
    if width < 4 or len(s) <= width:
        return s
    return s[: width - 3] + "..."


def _repeat(count: int, s: str) -> str:
    if count < 0:
        raise fail("strings: negative Repeat count")
    sized(count * len(s))
    return s * count


def _indent(n: int, s: str) -> str:
    pad = " " * max(n, 0)
    sized(len(s) + len(pad) * (s.count("\n") + 1))
    return pad + s.replace("\n", "\n" + pad)


def _strlist(v: Any) -> list[str]:
    if isinstance(v, list):
        return [x if isinstance(x, str) else go_str(x) for x in v if x is not None]
    if v is None:
        return []
    return [v] if isinstance(v, str) else [go_str(v)]


def _join(sep: str, v: Any) -> str:
    items = _strlist(v)
    sized(sum(len(x) for x in items) + len(sep) * len(items))
    return sep.join(items)


def _split_list(sep: str, s: str) -> list[str]:
    if len(s) > MAX_VALUE:
        raise fail("string too long to split")
    out = s.split(sep) if sep else list(s)
    if len(out) > MAX_ITEMS:
        raise fail(f"a list of {len(out)} items would be above {MAX_ITEMS}")
    return out


def _seq(v: Any, what: str) -> list[Any]:
    if isinstance(v, list):
        return v
    raise fail(f"cannot find {what} on type {gotype(v)}")


def _first(v: Any) -> Any:
    v = _seq(v, "first")
    return v[0] if v else None


def _last(v: Any) -> Any:
    v = _seq(v, "last")
    return v[-1] if v else None


def _list(*items: Any) -> list[Any]:
    if len(items) > MAX_ITEMS:
        raise fail("list too long")
    return list(items)


def _keys(*dicts: Any) -> list[str]:
    out: list[str] = []
    for d in dicts:
        if not isinstance(d, dict):
            raise fail(f"wrong type for value; expected map[string]interface {{}}; got {gotype(d)}")
        out.extend(d)
    return out


def _sort_alpha(v: Any) -> list[str]:
    return sorted(_strlist(v))


def _default(d: Any, *given: Any) -> Any:
    return d if not given or empty(given[0]) else given[0]


def _coalesce(*items: Any) -> Any:
    return next((x for x in items if not empty(x)), None)


def _cat(*items: Any) -> str:
    out = " ".join(go_str(x) for x in items if x is not None)
    sized(len(out))
    return out


def _b64dec(s: str) -> str:
    try:
        return base64.b64decode(s, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError) as exc:
        return str(exc)


def _div(a: Any, b: Any) -> int:
    x, y = to_int(a), to_int(b)
    if y == 0:
        raise fail("runtime error: integer divide by zero")
    q = abs(x) // abs(y)
    return q if (x >= 0) == (y >= 0) else -q  # Go truncates toward zero


def _mod(a: Any, b: Any) -> int:
    x, y = to_int(a), to_int(b)
    if y == 0:
        raise fail("runtime error: integer divide by zero")
    return x - y * _div(x, y)


def _fail(msg: str) -> str:
    raise fail(msg)


def _eq(a: Any, *others: Any) -> bool:
    if not others:
        raise fail("missing argument for comparison")
    return any(equal(a, b) for b in others)


def _get(d: Any, key: str) -> Any:
    if not isinstance(d, dict):
        raise fail(f"wrong type for value; expected map[string]interface {{}}; got {gotype(d)}")
    return d.get(key, "")


def _has_key(d: Any, key: str) -> bool:
    return isinstance(d, dict) and key in d


def _int_args(f: Callable[[int, int], int]) -> Func:
    def call(a: Any, *rest: Any) -> int:
        out = to_int(a)
        for b in rest:
            out = f(out, to_int(b))
            if not -(2**63) <= out < 2**63:
                raise fail("integer overflow")
        return out

    return call


def _has(needle: Any, haystack: Any) -> bool:
    if haystack is None:
        return False
    return any(equal(needle, x) for x in _seq(haystack, "has") if type(x) is type(needle))


FUNCS: dict[str, tuple[Func, str, str | None]] = {
    # Go builtins (text/template funcs.go); and/or are the evaluator's
    "not": (lambda v: not truth(v), "a", None),
    "len": (_len, "a", None),
    "index": (_index, "a", "a"),
    "print": (_sprint, "", "a"),
    "println": (lambda *a: " ".join(go_str(x) for x in a) + "\n", "", "a"),
    "printf": (printf, "s", "a"),
    "eq": (_eq, "a", "a"),
    "ne": (lambda a, b: not equal(a, b), "aa", None),
    "lt": (less, "aa", None),
    "le": (lambda a, b: less(a, b) or equal(a, b), "aa", None),
    "gt": (lambda a, b: less(b, a), "aa", None),
    "ge": (lambda a, b: less(b, a) or equal(a, b), "aa", None),
    "html": (lambda *a: html.escape(_sprint(*a)), "", "a"),
    "urlquery": (lambda *a: urllib.parse.quote_plus(_sprint(*a)), "", "a"),
    # sprig: strings
    "upper": (str.upper, "s", None),
    "lower": (str.lower, "s", None),
    "title": (_title, "s", None),
    "trim": (str.strip, "s", None),
    "trimPrefix": (lambda p, s: s.removeprefix(p), "ss", None),
    "trimSuffix": (lambda p, s: s.removesuffix(p), "ss", None),
    "trunc": (_trunc, "is", None),
    "abbrev": (_abbrev, "is", None),
    "contains": (lambda sub, s: sub in s, "ss", None),
    "hasPrefix": (lambda p, s: s.startswith(p), "ss", None),
    "hasSuffix": (lambda p, s: s.endswith(p), "ss", None),
    "replace": (lambda old, new, s: s.replace(old, new) if old else s, "sss", None),
    "repeat": (_repeat, "is", None),
    "nospace": (lambda s: "".join(s.split()), "s", None),
    "indent": (_indent, "is", None),
    "nindent": (lambda n, s: "\n" + _indent(n, s), "is", None),
    "quote": (lambda *a: " ".join(go_quote(go_str(x)) for x in a if x is not None), "", "a"),
    "squote": (lambda *a: " ".join(f"'{go_str(x)}'" for x in a if x is not None), "", "a"),
    "cat": (_cat, "", "a"),
    "join": (_join, "sa", None),
    "splitList": (_split_list, "ss", None),
    "toString": (lambda v: v if isinstance(v, str) else go_str(v), "a", None),
    "toJson": (lambda v: to_json(v), "a", None),
    "toPrettyJson": (lambda v: to_json(v, indent=2), "a", None),
    "b64enc": (lambda s: base64.b64encode(s.encode("utf-8", "replace")).decode(), "s", None),
    "b64dec": (_b64dec, "s", None),
    # sprig: defaults, flow, lists, dicts
    "default": (_default, "a", "a"),
    "empty": (empty, "a", None),
    "coalesce": (_coalesce, "", "a"),
    "ternary": (lambda t, f, c: t if c else f, "aab", None),
    "fail": (_fail, "s", None),
    "list": (_list, "", "a"),
    "first": (_first, "a", None),
    "last": (_last, "a", None),
    "has": (_has, "aa", None),
    "keys": (_keys, "", "a"),
    "sortAlpha": (_sort_alpha, "a", None),
    "get": (_get, "as", None),
    "hasKey": (_has_key, "as", None),
    # sprig: math (cast.ToInt64: floats truncate)
    "add": (_int_args(lambda x, y: x + y), "", "a"),
    "add1": (lambda a: to_int(a) + 1, "a", None),
    "sub": (_int_args(lambda x, y: x - y), "aa", None),
    "mul": (_int_args(lambda x, y: x * y), "a", "a"),
    "div": (_div, "aa", None),
    "mod": (_mod, "aa", None),
    "max": (_int_args(max), "a", "a"),
    "min": (_int_args(min), "a", "a"),
    "int": (to_int, "a", None),
    "float64": (to_float, "a", None),
    "atoi": (lambda s: to_int(s) if re.fullmatch(r"[+-]?\d+", s.strip()) else 0, "s", None),
}  # fmt: skip

NAMES = frozenset(FUNCS) | {"and", "or"}
