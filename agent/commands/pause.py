"""``pushagent pause [DURATION]`` and ``pushagent resume``: do-not-disturb from the shell.

The pause is kept in the store (``agent.dnd``), so it reaches a running agent (the rules
layer reads it before each batch) and survives restarts. Messages keep arriving and are
stored while paused; they just do not pop up.
"""

from __future__ import annotations

import argparse
import time

from agent import dnd
from agent.commands import common, load_config, open_store
from agent.errors import UsageError
from agent.timeparse import parse_duration


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "pause",
        help="do not show notifications for a while",
        description="Hold back notifications (messages are still received and stored). "
        "Without DURATION, until 'pushagent resume'.",
    )
    common(p)
    p.add_argument("duration", nargs="?", metavar="DURATION", help="e.g. 30m, 1h, 8h, 2d")
    p.set_defaults(func=pause)
    r = sub.add_parser("resume", help="end a pause", description="Show notifications again.")
    common(r)
    r.set_defaults(func=resume)


# "Until resumed" is stored as a far-future time so the rules need no special case.
FOREVER = 2**40


def pause(args: argparse.Namespace) -> int:
    now = time.time()
    if args.duration is None:
        until: float = FOREVER
    else:
        try:
            seconds = parse_duration(args.duration)
        except ValueError as exc:
            raise UsageError(f"pause: {exc}") from None
        if seconds <= 0:
            raise UsageError(f"pause: the duration must be more than 0, not {args.duration!r}")
        until = now + seconds
    store = open_store(load_config(args))
    try:
        dnd.pause(store, until)
    finally:
        store.close()
    if until >= FOREVER:
        print("notifications paused until 'pushagent resume'")
    else:
        print(
            f"notifications paused until {time.strftime('%Y-%m-%d %H:%M', time.localtime(until))}"
        )
    return 0


def resume(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    if not cfg.paths.db.exists():  # never paused here: nothing to end, no database to create
        print("notifications resumed")
        return 0
    store = open_store(cfg)
    try:
        dnd.resume(store)
    finally:
        store.close()
    print("notifications resumed")
    return 0
