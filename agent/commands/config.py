"""``pushagent config path|show``."""

from __future__ import annotations

import argparse
import json
import sys

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
    cfg = load_config(args)
    if args.action == "path":
        print(cfg.paths.config_file)
    else:
        json.dump(_config.shown(cfg), sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0
