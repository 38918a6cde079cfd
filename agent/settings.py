"""Turning TOML tables into frozen dataclasses, with errors that name file, key and value.

Pure: no environment, no file system. ``agent.config`` (and the relay's config module) use it
to build their dataclasses; a dataclass checks its own values in ``__post_init__`` by raising
ValueError, which ``build`` turns into a ConfigError that points at the key.

Every error in a table is reported at once, one per line of the ConfigError's text (a user
with three typos fixes them in one go instead of three runs): ``build`` checks every key,
and when ``__post_init__`` refuses the values, the field its message names ('mqtt.qos') is
put back to its default and the rest tried again, until they pass or a message names no
given field. Each error reported is then a real one of the values given, a check across
fields ('tls_cert' and 'tls_key' together) included, and none is reported twice.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NewType, TypeVar

from agent.errors import ConfigError
from agent.ntfyproto.delay import duration_seconds

T = TypeVar("T")
ByteSize = NewType("ByteSize", int)
"""A field holding a number of bytes: a whole number, or text such as ``"15MB"`` or ntfy's
``"15M"`` (``parse_size``)."""
Seconds = NewType("Seconds", float)
"""A field holding a duration in seconds: a number, or text as ntfy's server.yml writes one
(``"3h"``, ``"45s"``, ``"1h30m"``, ``"2d"``, ``"2 days"``: ntfy's ``util.ParseDuration``,
which is ``agent.ntfyproto.delay.duration_seconds``)."""
WholeSeconds = NewType("WholeSeconds", int)
"""The same in whole seconds (``"1.5h"`` is 5400; ``"1.5s"`` is refused)."""
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes in ``"15MB"``, ``"500 MB"``, ``"1.5G"``, ``"512k"``, ``"100"`` (units of 1024,
    as ntfy's ``util.ParseSize``, whose forms — digits and one of ``k m g b`` in any case,
    ``15M``, ``1g``, ``10b`` — are all read); ValueError when it is none of those."""
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise ValueError(text)
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def build(
    cls: type[T],
    table: Mapping[str, Any],
    *,
    where: str,
    prefix: str = "",
    fixed: Mapping[str, Any] | None = None,
) -> T:
    """Build dataclass ``cls`` from ``table``; ``where`` names the source (a file, 'flags').

    ``fixed`` supplies fields that are not configurable (a key for them is unknown).
    """
    fixed = fixed or {}
    hints = typing.get_type_hints(cls)
    fields = {
        f.name: f
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.init and f.name not in fixed
    }
    kwargs: dict[str, Any] = dict(fixed)
    errors: list[str] = []
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in fields:
            near = difflib.get_close_matches(name, list(fields), n=1)
            hint = f" (did you mean '{prefix}{near[0]}'?)" if near else ""
            errors.append(f"{where}: unknown key '{prefix}{key}'{hint}")
            continue
        try:
            kwargs[name] = convert(hints[name], value, where=where, key=f"{prefix}{key}")
        except ConfigError as exc:
            errors.extend(str(exc).splitlines())
    built, wrong = _construct(cls, kwargs, fixed)
    errors += [f"{where}: {w}" for w in wrong]  # the values that did convert are checked too
    if errors or built is None:
        raise ConfigError("\n".join(errors))
    return built


def _construct(
    cls: type[T], kwargs: Mapping[str, Any], fixed: Mapping[str, Any]
) -> tuple[T | None, list[str]]:
    """``cls(**kwargs)`` and the messages of every ValueError on the way (see the module
    docstring); the instance is None when any value was wrong."""
    given, wrong = dict(kwargs), []
    while True:
        try:
            built = cls(**given)
        except ValueError as exc:
            if str(exc) not in wrong:
                wrong.append(str(exc))
            named = [n for n in _names(str(exc)) if n in given and n not in fixed]
            if not named:
                return None, wrong
            del given[named[0]]  # back to its default; try the rest
        else:
            return (None if wrong else built), wrong


def _names(message: str) -> list[str]:
    """The field names a check's message quotes: 'mqtt.qos' → qos, 'rules[0].topic' → topic."""
    return [
        re.sub(r"\[\d+\]", "", q).rsplit(".", 1)[-1] for q in re.findall(r"'([\w.\[\]]+)'", message)
    ]


def convert(hint: Any, value: Any, *, where: str, key: str) -> Any:
    """Check and convert one TOML value to the field type ``hint``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return convert(inner[0], value, where=where, key=key)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, Mapping):
            _wrong(where, key, value, "a table")
        return build(hint, value, where=where, prefix=f"{key}.")
    if origin is tuple:
        if isinstance(value, str) and args[0] is str:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            _wrong(where, key, value, "a list")
        items, errors = [], []
        for i, v in enumerate(value):
            try:
                items.append(convert(args[0], v, where=where, key=f"{key}[{i}]"))
            except ConfigError as exc:
                errors.extend(str(exc).splitlines())
        if errors:
            raise ConfigError("\n".join(errors))
        return tuple(items)
    if hint is ByteSize:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        try:
            return parse_size(value) if isinstance(value, str) else _wrong(where, key, value, _S)
        except ValueError:
            _wrong(where, key, value, _S)
    if hint is Seconds or hint is WholeSeconds:
        return _seconds(value, whole=hint is WholeSeconds, where=where, key=key)
    if hint is bool:
        if not isinstance(value, bool):
            _wrong(where, key, value, "true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _wrong(where, key, value, "a whole number")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            _wrong(where, key, value, "a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            _wrong(where, key, value, "a string")
        return value
    if hint is Path:
        if not isinstance(value, str | Path):
            _wrong(where, key, value, "a file path")
        return Path(value).expanduser()
    raise TypeError(f"settings: no conversion for {hint!r}")  # a bug in a dataclass


_S = 'a size such as "15M", "1G", "500 MB" or a number of bytes'
_D = 'a duration such as "3h", "45s", "1h30m", "2d" or a number of seconds'
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_WHOLE_D = _D.replace("a duration", "a duration in whole seconds", 1)


def _seconds(value: Any, *, whole: bool, where: str, key: str) -> float | int:
    """A Seconds or WholeSeconds field's value: a number, or ntfy's duration text."""
    seconds: float | None = None
    if isinstance(value, str):  # a bare number is seconds here (ntfy wants a unit)
        bare = _NUMBER.fullmatch(value.strip())
        seconds = float(value) if bare else duration_seconds(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    if seconds is None or not 0 <= seconds < math.inf or (whole and not seconds.is_integer()):
        _wrong(where, key, value, _WHOLE_D if whole else _D)
    return int(seconds) if whole else seconds


def _wrong(where: str, key: str, value: Any, expected: str) -> typing.NoReturn:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise ConfigError(f"{where}: '{key}' must be {expected}, not {shown}")


def merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``top`` over ``base`` (tables merge, other values replace)."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def set_dotted(table: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict, creating tables on the way."""
    *parents, last = dotted.split(".")
    for part in parents:
        table = table.setdefault(part, {})
    table[last] = value
