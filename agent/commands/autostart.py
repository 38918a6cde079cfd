"""``pushagent autostart enable|disable|status``: start the agent with the session."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when the command runs: plistlib costs ~1 MB in every process
    from agent import autostart


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "autostart",
        help="start the agent when you log in",
        description="Linux: a systemd user unit (headless) or an XDG autostart entry "
        "(--tray). macOS: a LaunchAgent. Windows: the Run registry key.",
    )
    p.add_argument("action", choices=("enable", "disable", "status"))
    p.add_argument("--tray", action="store_true", help="start 'pushagent tray' (default: run)")
    p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="config file")
    p.set_defaults(func=run)


def target() -> autostart.Target:
    """This machine's autostart locations (platformdirs follows XDG_CONFIG_HOME)."""
    import platformdirs

    from agent import autostart

    return autostart.Target(
        platform=sys.platform,
        home=Path.home(),
        config_home=Path(platformdirs.user_config_dir()),
    )


def run(args: argparse.Namespace) -> int:
    from agent import autostart
    from agent.config import location_env

    where = target()
    if args.action == "enable":
        config = getattr(args, "config", None)
        mode = "tray" if args.tray else "headless"
        # PUSHAGENT_HOME / PUSHAGENT_CONFIG go along: the session starts it without them.
        written = autostart.enable(
            where, mode, Path(config) if config else None, env=location_env()
        )
        for path in written:
            print(f"wrote {path}")
        if where.platform.startswith("linux") and mode == "headless":
            print("start it now with: systemctl --user daemon-reload && "
                  "systemctl --user start pushagent")  # fmt: skip
        return 0
    if args.action == "disable":
        removed = autostart.disable(where)
        print("\n".join(f"removed {p}" for p in removed) or "autostart was not enabled")
        return 0
    states = autostart.status(where)
    for name, on in states.items():
        print(f"{name}: {'enabled' if on else 'disabled'}")
    return 0 if any(states.values()) else 3
