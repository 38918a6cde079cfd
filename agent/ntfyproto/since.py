"""ntfy's ``since=`` (``parseSince`` in ``server/server.go``), as a pure function.

In ntfy's order:

* empty or absent: nothing cached — except for ``poll=1``, which means everything;
* ``all``: everything; ``latest``: the newest message; ``none``: nothing;
* a message id (ntfy's: exactly 12 letters or digits): the messages after it;
* an integer: a unix time in seconds — ``since=30`` is 1970-01-01T00:00:30, *not* 30 s ago;
* a Go duration (``10m``, ``1h30m``, ``1.5h``, ``90s``, ``500ms``; no ``d``): that long ago;
* anything else: NtfyError 40008.

One extension: the relay also stores messages whose ids came from MQTT publishers (any
``agent.envelope.check_id`` id), and an agent resumes with ``since=<last id>``; so a valid id
that holds one of ``-_.:`` (which ntfy's ids, plain words such as ``garbage`` and ``10d``
never do) is taken as an id too, after the rules above.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from agent.envelope import check_id
from agent.errors import MessageError
from agent.ntfyproto.errors import NtfyError
from agent.timeparse import Since

MAX_TIME = 2**40
"""A unix time the store's integers hold (year 36812); later ones mean "nothing yet"."""
_NTFY_ID = re.compile(r"[A-Za-z0-9]{12}")
_INT = re.compile(r"[+-]?[0-9]+")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
             "m": 60.0, "h": 3600.0}  # fmt: skip
_GO_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_GO_DURATION = re.compile(r"[-+]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h))+")
_GO_MAX = (2**63 - 1) / 1e9  # time.Duration is int64 nanoseconds


def parse_since(
    value: str, *, poll: bool, now: float, known_id: Callable[[str], bool] | None = None
) -> Since | None:
    """The replay start for ``value`` (already trimmed, ``""`` when absent), or None for
    "nothing cached"; NtfyError 40008 for a value ntfy refuses.

    ``known_id`` (the relay: "is this the id of a stored message?") is asked last, for a
    valid id that matches no other rule: a publisher may choose ids such as ``door42`` and an
    agent resumes with ``since=<its last id>``, which must never turn into a 400 it retries
    forever. Only a word that is no stored id gets 40008."""
    if not value:
        return Since("all") if poll else None
    if value == "all":
        return Since("all")
    if value == "latest":
        return Since("latest")
    if value == "none":
        return None
    if _NTFY_ID.fullmatch(value):
        return Since("id", id=value)
    if _INT.fullmatch(value):
        t = int(value)
        if not -(2**63) <= t < 2**63:  # strconv.ParseInt(s, 10, 64)
            raise NtfyError(40008, f"{value[:40]!r} is out of range", field="since")
        return _at(t)
    seconds = go_duration(value)
    if seconds is not None:
        return _at(int(now - seconds) if seconds <= now else -1)
    if any(c in "-_.:" for c in value):
        try:
            return Since("id", id=check_id(value))
        except MessageError:
            pass
    if known_id is not None and _is_id(value) and known_id(value):
        return Since("id", id=value)
    raise NtfyError(
        40008,
        f"{value[:40]!r} is not all, latest, none, a message id, a unix time or a duration",
        field="since",
    )


def _is_id(value: str) -> bool:
    try:
        check_id(value)
    except MessageError:
        return False
    return True


def go_duration(text: str) -> float | None:
    """Seconds in a Go ``time.ParseDuration`` string (``1h30m``, ``-5m``, ``1.5s``), or None
    when it is not one (or overflows Go's int64 nanoseconds)."""
    if not _GO_DURATION.fullmatch(text):
        return None
    sign = -1.0 if text.startswith("-") else 1.0
    total = sum(float(n) * _GO_UNITS[u] for n, u in _GO_PART.findall(text.lstrip("+-")))
    if total > _GO_MAX:
        return None
    return sign * total


def _at(t: int) -> Since:
    # ntfy: messages newer than t; before 1970 is everything, beyond the store's range nothing
    return Since("time", time=min(max(t, 0), MAX_TIME - 1))
