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
    # The same agent as `run`, so the same way to name its server and topics (docs/INSTALL.md).
    p.add_argument(
        "--server",
        action="append",
        metavar="URL",
        help="a server, as for 'pushagent run' (repeatable; replaces the config's)",
    )
    p.add_argument(
        "--topic",
        action="append",
        help="a topic or MQTT filter, as for 'pushagent run' (repeatable; replaces the config's)",
    )
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
    from agent.tray import backend

    # Before the config, the store and the service: a tray that cannot show starts nothing.
    pystray = backend.load()
    cfg = load_config(args, servers=args.server, topics=args.topic, notifier=args.notifier)
    from agent.tray.app import TrayApp

    app = TrayApp(cfg, with_service=not args.no_service, pystray=pystray)
    # SIGTERM (logout, autostart stop) and Ctrl-C end the tray like Quit does; the wakeup
    # pipe wakes the tray's loop for them (see TrayApp.wakeup_fd).
    signal.set_wakeup_fd(app.wakeup_fd)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: app.stop())
    app.run()
    return 0
