"""Do-not-disturb: ``pushagent pause`` / ``resume`` and the tray write it, the rules read it.

The pause lives in the store's meta table (key ``pause_until``, a unix time), so a CLI in
another process pauses a running agent: the rules layer reads it before each batch.
"""

from __future__ import annotations

import datetime as _dt

from agent.store import Store

KEY = "pause_until"


def pause(store: Store, until: float) -> None:
    """Hold back notifications until the unix time ``until`` (messages are still stored)."""
    store.set_meta(KEY, repr(float(until)))


def resume(store: Store) -> None:
    """End a pause now."""
    store.set_meta(KEY, None)


def paused_until(store: Store, now: float) -> float | None:
    """The end of the current pause, or None when not paused (a past pause counts as none)."""
    value = store.get_meta(KEY)
    if value is None:
        return None
    try:
        until = float(value)
    except ValueError:
        return None  # a damaged value must not silence the agent for ever
    return until if until > now else None


def tomorrow_morning(now: float, hour: int = 8) -> float:
    """``hour`` o'clock local time on the day after ``now`` (the tray's "until tomorrow")."""
    day = _dt.datetime.fromtimestamp(now).date() + _dt.timedelta(days=1)
    return _dt.datetime.combine(day, _dt.time(hour)).timestamp()
