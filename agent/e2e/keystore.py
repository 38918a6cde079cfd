"""Where keys of encrypted topics live: the OS keyring, else a 0600 file. Never logged.

Layout, in the agent's config folder (beside ``config.toml``):

* ``e2e-index.json`` -- the NAMES only: per topic its key ids (newest first) and where they
  are kept (``keyring`` or ``file``). The agent reads it at start and asks the keyring only
  about topics listed there (opening the keyring costs ~0.4 s and ~25 MB, agent.secrets), so
  a device with no encrypted topic never loads it. Written 0600 like every file of ours.
* the keyring: service ``pushagent-e2e``, user the topic, value JSON ``[{"kid", "k"}, ...]``.
* ``e2e-keys.json`` -- only where no keyring is usable (keyring's ``null``/``fail`` stand-ins,
  no backend, or the backend failing): the same lists per topic, mode 0600, with one warning
  per process. A key file that group or others can read is refused, like a password file.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.e2e import keys
from agent.errors import ConfigError
from agent.private import read_private, write_private

SERVICE = "pushagent-e2e"
INDEX = "e2e-index.json"
KEY_FILE = "e2e-keys.json"
log = logging.getLogger("pushagent.e2e")
_warned = False


class KeyFileError(ConfigError):
    """The 0600 key file is unusable (too open, unreadable): the agent refuses to start,
    as it does for a password file (agent.secrets.read_password_file)."""


@dataclass(frozen=True, slots=True)
class TopicKeys:
    """A topic's key ids, newest first, and where they are kept."""

    kids: tuple[str, ...]
    where: str


class KeyStore:
    """The keys of one agent installation (``cfg``'s config folder)."""

    def __init__(self, cfg: AgentConfig) -> None:
        folder = cfg.paths.config_file.parent
        self.index_path = folder / INDEX
        self.file_path = folder / KEY_FILE

    # --- reading --------------------------------------------------------------------------

    def index(self) -> dict[str, TopicKeys]:
        """Topic -> its key ids and where they live (no secret in here)."""
        try:
            data = json.loads(self.index_path.read_text(encoding="utf-8"))
            topics = data["topics"]
            return {
                str(t): TopicKeys(tuple(str(k) for k in v["kids"]), str(v["where"]))
                for t, v in topics.items()
            }
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{self.index_path}: unreadable E2E key index ({exc})") from None

    def stamp(self) -> float:
        """When the index last changed (a running agent reloads keys when it moves)."""
        try:
            return self.index_path.stat().st_mtime
        except OSError:
            return 0.0

    def keys(self, topic: str) -> list[tuple[str, bytes]]:
        """``(kid, key)`` of ``topic``, newest first; empty when it has none."""
        entry = self.index().get(topic)
        if entry is None:
            return []
        stored = self._file()[1] if entry.where == "file" else self._from_keyring(topic)
        return _decode(stored.get(topic, []), f"{entry.where} entry of {topic!r}")

    def all_keys(self) -> dict[str, dict[str, bytes]]:
        """Every topic's keys as ``{topic: {kid: key}}`` (what the agent decrypts with)."""
        out: dict[str, dict[str, bytes]] = {}
        index = self.index()
        in_file = self._file()[1] if any(e.where == "file" for e in index.values()) else {}
        for topic, entry in index.items():
            raw = in_file if entry.where == "file" else self._from_keyring(topic)
            out[topic] = dict(_decode(raw.get(topic, []), f"{entry.where} entry of {topic!r}"))
        return out

    # --- writing --------------------------------------------------------------------------

    def add(self, topic: str, key: bytes) -> tuple[str, str]:
        """Keep ``key`` as ``topic``'s newest; ``(kid, where)``. A key already there moves
        to the front (importing twice is harmless)."""
        kid = keys.kid_of(key)
        current = [(k, v) for k, v in self.keys(topic) if k != kid]
        items = [(kid, key), *current]
        where = self._store(topic, items)
        index = self.index()
        index[topic] = TopicKeys(tuple(k for k, _ in items), where)
        self._write_index(index)
        return kid, where

    def _store(self, topic: str, items: list[tuple[str, bytes]]) -> str:
        value = [{"kid": k, "k": keys.export(v).removeprefix(keys.EXPORT_PREFIX)} for k, v in items]
        kr = _usable_keyring()
        if kr is not None:
            try:
                kr.set_password(SERVICE, topic, json.dumps(value))
                self._drop_from_file(topic)
                return "keyring"
            except kr.errors.KeyringError as exc:
                _warn_once(self.file_path, f"the keyring failed ({type(exc).__name__})")
        else:
            _warn_once(self.file_path, "no OS keyring is usable here")
        _, data = self._file()
        data[topic] = value
        write_private(self.file_path, (json.dumps({"topics": data}, indent=1) + "\n").encode())
        return "file"

    def _drop_from_file(self, topic: str) -> None:
        if not self.file_path.exists():
            return
        _, data = self._file()
        if data.pop(topic, None) is not None:
            write_private(self.file_path, (json.dumps({"topics": data}, indent=1) + "\n").encode())

    def _write_index(self, index: Mapping[str, TopicKeys]) -> None:
        body = {"topics": {t: {"kids": list(e.kids), "where": e.where} for t, e in index.items()}}
        write_private(self.index_path, (json.dumps(body, indent=1, sort_keys=True) + "\n").encode())

    # --- the two places -------------------------------------------------------------------

    def _file(self) -> tuple[Path, dict[str, Any]]:
        path = self.file_path
        text = read_private(path, f"E2E key file {path}", error=KeyFileError, missing_ok=True)
        if text is None:
            return path, {}
        try:
            data = json.loads(text)["topics"]
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyFileError(f"E2E key file {path}: unreadable ({type(exc).__name__})") from None
        if not isinstance(data, dict):
            raise KeyFileError(f"E2E key file {path}: 'topics' is not a table")
        return path, data

    def _from_keyring(self, topic: str) -> dict[str, Any]:
        kr = _usable_keyring()
        if kr is None:
            raise ConfigError(
                f"the keys of {topic!r} are in the OS keyring, which is not usable now; "
                f"import them again ('pushagent key import {topic} ...')"
            )
        try:
            raw = kr.get_password(SERVICE, topic)
        except kr.errors.KeyringError as exc:
            raise ConfigError(f"cannot read the keyring: {type(exc).__name__}") from None
        return {topic: json.loads(raw)} if raw else {}


def _decode(items: Any, what: str) -> list[tuple[str, bytes]]:
    try:
        return [(str(i["kid"]), base64.urlsafe_b64decode(str(i["k"]) + "=")) for i in items]
    except (TypeError, KeyError, ValueError):
        raise ConfigError(f"E2E keys: the {what} is damaged; import the key again") from None


def _usable_keyring() -> Any:
    """The keyring module when a real backend is there, else None (``agent.secrets.no_keyring``:
    the null and fail backends, and a chainer of only those, count as none)."""
    from agent import secrets

    try:
        if secrets.no_keyring():
            return None
        return secrets._keyring()
    except (ConfigError, RuntimeError):
        return None


def _warn_once(path: Path, why: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warning("%s: E2E keys are kept in %s (mode 0600)", why, path)
