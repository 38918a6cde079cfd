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
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.errors import ConfigError
from agent.private import read_private, write_private

FILE_NAME = "secrets.json"
KINDS = ("passwords", "tokens")


def path(cfg: AgentConfig) -> Path:
    """Where the file is: the agent's config folder."""
    return cfg.paths.config_file.parent / FILE_NAME


def _read(cfg: AgentConfig) -> dict[str, dict[str, Any]]:
    where = path(cfg)
    text = read_private(where, str(where), missing_ok=True)
    if text is None:
        return {k: {} for k in KINDS}
    try:
        data = json.loads(text)
    except ValueError as exc:
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
