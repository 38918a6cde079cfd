"""One module per ``pushagent`` command; shared helpers for them live here."""

from __future__ import annotations

import argparse
from typing import Any

from agent import config as _config
from agent.store import Store


def common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options every command takes (``--config`` may come before or after the command)."""
    parser.add_argument(
        "--config", metavar="FILE", default=argparse.SUPPRESS, help="config file (TOML)"
    )
    return parser


def mqtt_protocol_flag(parser: argparse.ArgumentParser) -> None:
    """``--mqtt-protocol`` (the config's ``[mqtt] protocol``)."""
    parser.add_argument(
        "--mqtt-protocol",
        choices=("auto", "5", "3.1.1"),
        help="MQTT protocol: auto (MQTT 5, else 3.1.1, remembered per server), 5 or 3.1.1",
    )


def load_config(args: argparse.Namespace, **flags: Any) -> _config.AgentConfig:
    """The configuration for a command: its file, the environment, then ``flags``."""
    path = getattr(args, "config", None)
    from pathlib import Path

    return _config.load(flags, config_file=Path(path) if path else None)


def open_store(cfg: _config.AgentConfig) -> Store:
    """The agent's store, opened (the caller closes it)."""
    return Store(cfg.paths.db).open()
