"""Secrets in a 0600 file, for a machine with no usable OS keyring (a headless Pi, an IoT box).

``pushagent login`` writes here only when keyring has no backend that keeps secrets (its
``null`` backend accepts a password and keeps nothing; ``fail`` refuses): the file is
``secrets.json`` in the agent's config folder, beside ``config.toml``, written atomically,
mode 0600 in a 0700 folder (``agent.private``). ``agent.secrets`` reads it after the keyring.

Layout: ``{"passwords": {"mqtt://host:port": {"user": U, "password": P}},
"tokens": {"http://host:port": T}}``. A file that others can read is refused with the
``chmod`` that fixes it, as ``auth.password_file`` is.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.errors import ConfigError
from agent.private import write_private

FILE_NAME = "secrets.json"
KINDS = ("passwords", "tokens")


def path(cfg: AgentConfig) -> Path:
    """Where the file is: the agent's config folder."""
    return cfg.paths.config_file.parent / FILE_NAME


def _read(cfg: AgentConfig) -> dict[str, dict[str, Any]]:
    where = path(cfg)
    try:
        mode = where.stat().st_mode
    except FileNotFoundError:
        return {k: {} for k in KINDS}
    except OSError as exc:
        raise ConfigError(f"{where}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{where}: must be readable by you only (mode 0600), not "
            f"{stat.S_IMODE(mode):04o}; run: chmod 600 {where}"
        )
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot read the stored secrets: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: cannot read the stored secrets: not a JSON object")
    return {k: dict(data[k]) if isinstance(data.get(k), dict) else {} for k in KINDS}


def _write(cfg: AgentConfig, data: dict[str, dict[str, Any]]) -> None:
    try:
        write_private(path(cfg), (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
    except OSError as exc:
        raise ConfigError(f"{path(cfg)}: cannot write: {exc.strerror or exc}") from None


def put(cfg: AgentConfig, kind: str, key: str, value: Any) -> Path:
    """Store ``value`` under ``kind``/``key``; returns the file's path (for the one line)."""
    data = _read(cfg)
    data[kind][key] = value
    _write(cfg, data)
    return path(cfg)


def get(cfg: AgentConfig, kind: str, key: str) -> Any:
    """The value stored under ``kind``/``key``, or None (also when there is no file)."""
    return _read(cfg)[kind].get(key)


def delete(cfg: AgentConfig, kind: str, key: str) -> bool:
    """Forget ``kind``/``key``; False if it was not there (the file is then left alone)."""
    data = _read(cfg)
    if data[kind].pop(key, None) is None:
        return False
    _write(cfg, data)
    return True
