"""Durations ("10m", "1h30m", "7d") and ntfy's ``since=`` values, as pure functions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from agent.envelope import check_id
from agent.errors import MessageError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^(?:\d{1,9}[smhdw])+$")
_PART = re.compile(r"(\d+)([smhdw])")


def parse_duration(text: str) -> int:
    """Seconds in a duration such as ``90s``, ``10m``, ``1h30m``, ``7d`` or a bare ``300``.

    Raises ValueError with a message a user can act on.
    """
    value = text.strip().lower()
    if value.isdigit() and len(value) <= 9:
        return int(value)
    if not _DURATION.match(value):
        raise ValueError(f"{text!r} is not a duration (examples: 90s, 10m, 1h30m, 7d)")
    return sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(value))


@dataclass(frozen=True, slots=True)
class Since:
    """Where a replay starts: everything, the newest only, after a message id, a time, or
    nowhere (``none``: live messages only, ntfy's default without ``poll=1``)."""

    kind: Literal["all", "latest", "id", "time", "none"]
    id: str | None = None
    time: int | None = None


def parse_since(text: str, *, now: int) -> Since:
    """Parse ntfy's ``since=``: ``all``, ``latest``, ``none``, a unix time, a duration, or a
    message id."""
    value = text.strip()
    if value in ("all", ""):
        return Since("all")
    if value == "latest":
        return Since("latest")
    if value == "none":
        return Since("none")
    if value.isdigit() and len(value) >= 9:
        return Since("time", time=int(value))
    try:
        return Since("time", time=max(0, now - parse_duration(value)))
    except ValueError:
        pass
    try:
        return Since("id", id=check_id(value))
    except MessageError:
        raise ValueError(
            f"since={text[:80]!r} is not 'all', a unix time, a duration (10m, 2h) or a message id"
        ) from None
