"""ntfy's scheduled-delivery time (``X-Delay``/``Delay``/``X-At``/``At``/``X-In``/``In``,
``?delay=``, JSON ``delay``) as a pure function: text and "now" → a unix time, or NtfyError.

ntfy (``parsePublishParams`` and ``util.ParseFutureTime``) tries, in this order:

1. an integer (Go's ``strconv.Atoi``: optional sign, digits) as a unix time, taken only if it
   is not in the past;
2. a duration from now: Go's ``time.ParseDuration`` (``30m``, ``1h30m``, ``1.5h``, ``0``), then
   ntfy's own ``<n> <unit>`` with ``d/day/days``, ``h/hour/hours``, ``m/min/mins/minute/
   minutes``, ``s/sec/secs/second/seconds`` (``2 days``, ``30min``, case-insensitive);
3. a natural-language time (the Go library ``olebedev/when``, English rules) in the server's
   local time zone; one that is not in the future is tried again as ``tomorrow, <text>``.

Then the result must be at least ``min_delay`` (ntfy: 10 s; 40005 below) and at most
``max_delay`` (ntfy's ``message-delay-limit``, default 3 days; 40006 above) from now; text
that none of the rules reads is 40004.

The natural-language part is a documented subset of ``when``'s English rules — the forms
ntfy's documentation shows and their close relatives, composed as ``[day][,] [at] [time]``:

* day: ``today``, ``tonight`` (23:00 unless a time is given), ``tomorrow``/``tmr`` (+24 h),
  a weekday (``monday``/``mon``, optionally ``on``/``next``: its next occurrence, a week
  ahead when it is today);
* time: ``10am``, ``8 pm``, ``8:30pm``, ``10:30``, ``17:15:30``, ``noon``, ``midnight``.

A day alone keeps the current time of day (``tomorrow`` = 24 h from now, as ``when`` does); a
time sets hours and minutes and zeroes the seconds. Anything else (``when``'s month names,
``in 5 minutes``, ``next week``...) is refused with 40004 rather than guessed.
"""

from __future__ import annotations

import datetime as dt
import re

from agent.ntfyproto.errors import NtfyError
from agent.ntfyproto.since import go_duration

MIN_DELAY = 10
"""ntfy's ``MessageDelayMin``: a scheduled message is at least this many seconds away."""
MAX_DELAY = 3 * 86400
"""ntfy's default ``message-delay-limit`` (``limits.max_delay`` on the relay)."""

_ATOI = re.compile(r"[+-]?[0-9]+")
_NTFY_DURATION = re.compile(r"(?i)([0-9]+)\s*(d|days?|h|hours?|m|mins?|minutes?|s|secs?|seconds?)")
_UNIT = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_WEEKDAYS = {"monday": 0, "mon": 0, "tuesday": 1, "tue": 1, "tues": 1, "wednesday": 2,
             "wed": 2, "thursday": 3, "thu": 3, "thur": 3, "thurs": 3, "friday": 4, "fri": 4,
             "saturday": 5, "sat": 5, "sunday": 6, "sun": 6}  # fmt: skip
_DAY = (
    r"(?P<day>today|tonight|tomorrow|tmr|(?:(?:on|next)\s+)?(?P<wd>"
    + "|".join(sorted(_WEEKDAYS, key=len, reverse=True))
    + r"))"
)
_TIME = (
    r"(?P<time>noon|midnight"
    r"|(?P<h>[0-9]{1,2})(?::(?P<m>[0-9]{2})(?::(?P<s>[0-9]{2}))?)?\s*(?P<ap>[ap]\.?m\.?)?)"
)
_NATURAL = re.compile(rf"(?i){_DAY}?\s*,?\s*(?:at\s+)?{_TIME}?")


def parse_delay(
    text: str,
    now: float,
    *,
    min_delay: int = MIN_DELAY,
    max_delay: int = MAX_DELAY,
    tz: dt.tzinfo | None = None,
) -> int:
    """The unix time (whole seconds, as ntfy stores ``time``) at which a message published
    ``now`` with this delay text is due; NtfyError 40004/40005/40006 as ntfy answers.

    ``tz`` is the zone natural-language times are read in (default: the local one, as ntfy's
    server reads them in its own)."""
    due = parse_future_time(text, now, tz=tz)
    if due is None:
        raise NtfyError(40004, f"cannot read {text[:60]!r} as a delay", field="delay")
    if due < int(now) + min_delay:
        raise NtfyError(40005, f"{text[:60]!r} is less than {min_delay} s from now", field="delay")
    if due > int(now) + max_delay:
        raise NtfyError(40006, f"{text[:60]!r} is more than {max_delay} s from now", field="delay")
    return due


def parse_future_time(text: str, now: float, *, tz: dt.tzinfo | None = None) -> int | None:
    """ntfy's ``ParseFutureTime``: the unix time ``text`` names, or None if no rule reads it
    (no minimum or maximum checked here)."""
    s = text.strip()
    if _ATOI.fullmatch(s) and len(s) <= 20 and -(2**63) <= int(s) < 2**63 and int(s) >= now:
        return int(s)  # Go's Atoi: an int64 (longer digit strings read as no unix time)
    seconds = duration_seconds(s)
    if seconds is not None:
        return int(now + seconds)
    return _natural(s, now, tz)


def duration_seconds(text: str) -> float | None:
    """A duration as ntfy reads one in a delay: Go's ``time.ParseDuration`` (``30m``,
    ``1h30m``, ``1.5s``, ``0``) or ntfy's ``<n> <unit>`` (``2 days``, ``30min``); None if
    neither reads it. (Also the ``X-Ack-Retry``/``X-Ack-Expire`` durations, agent.ntfyproto.ack.)"""
    s = text.strip()
    seconds = 0.0 if s in ("0", "+0", "-0") else go_duration(s)  # Go's special case
    if seconds is None and (m := _NTFY_DURATION.fullmatch(s)) is not None:
        seconds = float(int(m.group(1)) * _UNIT[m.group(2)[0].lower()])
    return seconds


def _natural(s: str, now: float, tz: dt.tzinfo | None) -> int | None:
    m = _NATURAL.fullmatch(s)
    if m is None or not (m.group("day") or m.group("time")) or not s:
        return None
    ref = dt.datetime.fromtimestamp(int(now), tz) if tz else dt.datetime.fromtimestamp(int(now))
    clock = _clock(m)
    if m.group("time") and clock is None:
        return None
    day = (m.group("day") or "").lower()
    t = _at(ref, day, m.group("wd"), clock)
    if t <= ref and day in ("", "today"):  # ntfy: not in the future → "tomorrow, <text>"
        t = _at(ref, "tomorrow", None, clock)
    return int(t.timestamp()) if t > ref else None


def _clock(m: re.Match[str]) -> tuple[int, int, int] | None:
    """(hour, minute, second) from the time part, None if absent or out of range."""
    word = (m.group("time") or "").lower()
    if word == "noon":
        return 12, 0, 0
    if word == "midnight":
        return 0, 0, 0
    if m.group("h") is None:
        return None
    h, mi, sec = int(m.group("h")), int(m.group("m") or 0), int(m.group("s") or 0)
    ap = (m.group("ap") or "").lower()[:1]
    if ap:
        if not 1 <= h <= 12:
            return None
        h = h % 12 + (12 if ap == "p" else 0)
    elif m.group("m") is None:
        return None  # a bare number is not a time of day ("when" needs am/pm or a colon)
    if h > 23 or mi > 59 or sec > 59:
        return None
    return h, mi, 0 if m.group("s") is None else sec


def _at(
    ref: dt.datetime, day: str, weekday: str | None, clock: tuple[int, int, int] | None
) -> dt.datetime:
    offset = dt.timedelta(0)
    if day in ("tomorrow", "tmr"):
        offset = dt.timedelta(days=1)
    elif weekday is not None:
        ahead = (_WEEKDAYS[weekday.lower()] - ref.weekday()) % 7
        offset = dt.timedelta(days=ahead or 7)
    if day == "tonight" and clock is None:
        clock = (23, 0, 0)
    t = ref + offset
    if clock is not None:
        t = t.replace(hour=clock[0], minute=clock[1], second=clock[2], microsecond=0)
    return t
