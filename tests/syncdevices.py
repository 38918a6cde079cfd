"""Real devices for the state-sync tests: a ``pushagent run`` with its own PUSHAGENT_HOME and,
when asked, its own desktop (Xvfb + D-Bus session bus + dunst: tests/desktop.py), so what
one device's dunst shows or closes is that device's alone."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from agent import config
from agent.store import Store
from tests.desktop import Desktop
from tests.helpers import child_env, pushagent, spawn, wait_for


class Device:
    """One agent process (``name`` is its ``device_name``)."""

    def __init__(self, root: Path, name: str, *, desktop: bool = True) -> None:
        self.name = name
        self.root = root
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.desktop = Desktop(root / "desktop").start() if desktop else None
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def configure(self, server: str, topics: list[str], notifier: str = "desktop") -> Device:
        (self.home / "config.toml").write_text(
            f"servers = [{json.dumps(server)}]\ntopics = {json.dumps(topics)}\n"
            f'notifier = "{notifier}"\ndevice_name = "{self.name}"\n'
        )
        return self

    def start(self) -> Device:
        env = {**child_env(self.home), **(self.desktop.env if self.desktop else {})}
        self._log = (self.root / "agent.log").open("ab")
        self.proc = spawn("agent", ["run"], env=env, stdout=self._log, stderr=self._log)
        wait_for(self.connected, timeout=30, what=f"agent {self.name} connected ({self.log()})")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        self.stop()
        if self.desktop is not None:
            self.desktop.stop()

    def status(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.home / "data" / "status.json").read_text()))
        except (OSError, ValueError):
            return {}

    def connected(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"agent {self.name} exited: {self.log()}")
        return self.status().get("state") == "connected"

    @property
    def client_id(self) -> str:
        return str(self.status()["client_id"])

    def log(self) -> str:
        path = self.root / "agent.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def cli(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return pushagent(*args, home=self.home)

    def states(self) -> dict[str, str]:
        """id -> state, from ``pushagent history --json`` (the store as the user sees it)."""
        done = self.cli("history", "--json", "--limit", "100000")
        assert done.returncode == 0, done.stderr
        return {m["id"]: m["state"] for m in json.loads(done.stdout)}

    def count(self, state: str | None = None) -> int:
        """Stored messages (in ``state``), read straight from the WAL database."""
        db = self.home / "data" / "pushagent.db"
        if not db.exists():
            return 0
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            sql = "SELECT count(*) FROM messages" + (" WHERE state = ?" if state else "")
            return int(conn.execute(sql, (state,) if state else ()).fetchone()[0])

    def unread(self) -> int:
        """The tray's unread count (agent.tray.app.read_snapshot over this device's store)."""
        from agent.tray.app import read_snapshot

        cfg = config.load(env=child_env(self.home))
        with Store(cfg.paths.db) as store:
            return read_snapshot(cfg, store, None).unread

    def on_screen(self) -> int:
        assert self.desktop is not None
        return self.desktop.count("displayed")

    def shown(self) -> list[str]:
        """Summaries of every notification dunst showed, in order."""
        assert self.desktop is not None
        return [summary for summary, _ in self.desktop.icons()]

    def closed(self) -> list[str]:
        """Summaries of the notifications dunst has closed (its history), newest first."""
        assert self.desktop is not None
        return [str(n["summary"]) for n in self.desktop.history()]


@contextlib.contextmanager
def running(
    root: Path,
    server: str,
    topics: list[str],
    names: Sequence[str] = ("A", "B", "C"),
    *,
    desktop: bool = True,
    notifier: str = "desktop",
) -> Iterator[list[Device]]:
    """One started device per name (under ``root / name``) on ``server`` and ``topics``;
    each is stopped and its desktop closed on the way out, whatever happened."""
    devs: list[Device] = []
    try:
        for name in names:
            dev = Device(root / name, name, desktop=desktop)
            devs.append(dev.configure(server, topics, notifier))
        for d in devs:
            d.start()
        yield devs
    finally:
        for d in devs:
            d.close()
