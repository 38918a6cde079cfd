"""What the desktop backend has on screen, remembered across agent restarts.

An ntfy 2.16 update or clear can arrive after the agent that showed the notification has
exited (a reboot of the agent, an upgrade, a crash). The notification is still on screen, held
by the notification server under its D-Bus id; this file keeps ``(topic, sequence key) → id``
so the next agent can replace or close it (``Notify`` with ``replaces_id``,
``CloseNotification``).

A D-Bus id means something only to the server instance that gave it (dunst restarts its
counter), so the file also records that instance's unique bus name (``:1.42``): entries from
another instance are never used — closing some other application's notification would be
worse than leaving ours open.

Best effort by design: the file is written atomically (0600) once per batch, never fsynced;
losing it costs a notification left on screen, never a message.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from pathlib import Path

from agent.private import write_private

log = logging.getLogger("pushagent.notify.desktop")
KEEP = 1000
"""Entries kept (oldest forgotten first)."""


def _key(topic: str, sequence: str) -> str:
    return f"{topic}\n{sequence}"


class ScreenMemory:
    """``(topic, sequence key)`` → D-Bus notification id, for one notification server."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._server = ""
        self._ids: OrderedDict[str, int] = OrderedDict()
        self._dirty = False

    def attach(self, server: str) -> None:
        """Load what an earlier run left, keeping it only if ``server`` (the notification
        server's unique bus name now) is the one that gave the ids."""
        self._server = server
        if self._path is None or not server:
            return
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s: %s", self._path, exc)
            return
        if not isinstance(data, dict) or data.get("server") != server:
            return  # another notification server instance: its ids are not ours
        ids = data.get("ids")
        if isinstance(ids, dict):
            for key, pid in ids.items():
                if isinstance(key, str) and type(pid) is int and pid > 0:
                    self._ids[key] = pid

    def get(self, topic: str, sequence: str) -> int | None:
        return self._ids.get(_key(topic, sequence))

    def put(self, topic: str, sequence: str, pid: int) -> None:
        key = _key(topic, sequence)
        if self._ids.get(key) == pid:
            return
        self._ids[key] = pid
        self._ids.move_to_end(key)
        while len(self._ids) > KEEP:
            self._ids.popitem(last=False)
        self._dirty = True

    def forget(self, topic: str, sequence: str) -> None:
        if self._ids.pop(_key(topic, sequence), None) is not None:
            self._dirty = True

    def save(self) -> None:
        """Write the file if anything changed (once per batch)."""
        if not self._dirty or self._path is None or not self._server:
            return
        self._dirty = False
        data = {"server": self._server, "ids": dict(self._ids)}
        try:
            write_private(self._path, json.dumps(data, separators=(",", ":")).encode())
        except OSError as exc:
            log.warning("cannot write %s: %s", self._path, exc)
