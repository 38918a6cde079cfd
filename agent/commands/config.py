"""``pushagent config path|show``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent import config as _config
from agent.commands import common, load_config


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("config", help="show where the config is, or what is in effect")
    common(p)
    p.add_argument(
        "action",
        choices=("path", "show"),
        help="path: the config file; show: the effective configuration, secrets masked",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "path":
        # Only where the file is: it need not exist yet, and a broken one must still be found.
        path = getattr(args, "config", None)
        print(_config.paths(config_file=Path(path) if path else None).config_file)
        return 0
    cfg = load_config(args)
    json.dump(_config.shown(cfg), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
