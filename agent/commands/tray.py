"""``pushagent tray``: the agent with a system-tray icon (pystray), in-process."""

from __future__ import annotations

import argparse
import signal

from agent.commands import common, load_config
from agent.config import NOTIFIERS


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "tray",
        help="run the agent with a system-tray icon",
        description="Run the agent (as 'pushagent run' does) with a tray icon showing the "
        "connection, the unread count and the last messages.",
    )
    common(p)
    p.add_argument("--notifier", choices=NOTIFIERS, help="where new messages go")
    p.add_argument(
        "--no-service", action="store_true", help="only the icon over the store (no connection)"
    )
    # The tray starts its history window as a child with this (also in a frozen binary).
    p.add_argument("--history-window", metavar="DB", help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.history_window:
        from agent.tray.history import main

        return main([args.history_window])
    cfg = load_config(args, notifier=args.notifier)
    from agent.tray.app import TrayApp

    app = TrayApp(cfg, with_service=not args.no_service)
    # SIGTERM (logout, autostart stop) ends the tray like Quit does.
    signal.signal(signal.SIGTERM, lambda *_: app.stop())
    app.run()
    return 0
