"""The pystray side of the tray: icon, menu, callbacks, and the refresh thread.

pystray comes from ``agent.tray.backend`` (which imports it); its X11 icon is mended in
``agent.tray.xembed``. On plain X11 (pystray's xorg backend) there is no popup menu: a click
runs the default entry, "Open history", whose window offers the rest.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import threading
import time
import webbrowser
from types import ModuleType
from typing import Any

from agent import dnd
from agent.commands.read import mark_read
from agent.config import AgentConfig
from agent.notify.desktop import safe_url
from agent.store import Store
from agent.tray import backend
from agent.tray import icon as drawing
from agent.tray.model import UNREAD_STATES, Entry, Recent, Snapshot, menu_entries
from agent.tray.service import ServiceHandle, start_service

log = logging.getLogger("pushagent.tray")
REFRESH = 1.0
STOP_ATTEMPTS = 10  # a second apart


def read_snapshot(cfg: AgentConfig, store: Store, service: ServiceHandle | None) -> Snapshot:
    """The tray's view: connection state from the status file, the rest from the store."""
    connected = False
    try:
        status = json.loads(cfg.paths.status_file.read_text())
        connected = status.get("state") == "connected" and service is not None
    except (OSError, ValueError):
        pass
    now = time.time()
    counts = store.count_by_state()
    recent = tuple(
        Recent(s.message.id, s.message.topic, s.message.title or s.message.message[:80],
               s.state in UNREAD_STATES)
        for s in store.query(limit=10)
    )  # fmt: skip
    problem = None
    if service is not None and service.error is not None:
        problem = f"agent stopped: {str(service.error)[:80]}"
    return Snapshot(
        problem=problem,
        connected=connected,
        unread=sum(counts.get(s, 0) for s in UNREAD_STATES),
        paused=dnd.paused_until(store, now) is not None,
        recent=recent,
    )


def icon_class(pystray: ModuleType) -> Any:
    """The Icon of the backend for this desktop (``backend.icon_class``: StatusNotifierItem
    where there is a host for it, else X11); the X11 one mended (``agent.tray.xembed``)."""
    from agent.config import pystray_backend

    base = backend.icon_class(pystray, forced=pystray_backend())
    if base.__module__ != "pystray._xorg":
        return base
    from agent.tray import xembed

    return xembed.subclass(base)


class TrayApp:
    """``run()`` blocks in pystray's loop until Quit (or ``stop()``)."""

    def __init__(
        self, cfg: AgentConfig, *, with_service: bool = True, pystray: ModuleType | None = None
    ) -> None:
        # pystray first (``backend.load``): without a tray, no store is opened, no service run.
        self._pystray = backend.load() if pystray is None else pystray
        self.cfg = cfg
        self.store = Store(cfg.paths.db).open()
        self.service = start_service(cfg) if with_service else None
        self.snapshot: Snapshot | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._signal_fd: int | None = None
        self._loop_ended = threading.Event()
        self._loop_ready = self._icon_stopped = False
        self._history: subprocess.Popen[bytes] | None = None
        pystray = self._pystray
        snap = read_snapshot(cfg, self.store, self.service)
        self.icon = icon_class(pystray)(
            "edgepush", drawing.draw(snap.state, snap.unread, connected=snap.connected),
            snap.title, self._menu(snap),
        )  # fmt: skip
        self.snapshot = snap

    def run(self) -> None:
        refresher = threading.Thread(target=self._refresh_loop, name="tray-refresh", daemon=True)

        def setup(icon: Any) -> None:
            icon.visible = True
            with self._lock:
                self._loop_ready = True
            if self._stopping.is_set():  # stop() came before the loop could take it
                self._stop_icon()
                return
            refresher.start()

        if self._stopping.is_set():
            self._shutdown()
            return
        try:
            self.icon.run(setup=setup)
        finally:
            self._loop_ended.set()
            self._shutdown()

    def stop(self) -> None:
        """End the tray, from any thread or a signal handler, also before its loop runs."""
        self._stopping.set()
        with self._lock:
            ready = self._loop_ready
        if ready:
            self._stop_icon()

    def _stop_icon(self) -> None:
        with self._lock:
            if self._icon_stopped:
                return
            self._icon_stopped = True
        request = getattr(self.icon, "request_stop", None)  # agent.tray.xembed's
        if request is None:
            self.icon.stop()
            return
        threading.Thread(
            target=self._request_stop, args=(request,), name="tray-stop", daemon=True
        ).start()

    def _request_stop(self, request: Any) -> None:
        """Ask the X11 loop to stop until it has: under load, about 1 in 30 stops asked
        right after start-up was never taken (the loop kept waiting for events), and the
        process never exited. Asking again a second later ends it."""
        for attempt in range(STOP_ATTEMPTS):
            if attempt:
                log.info("the tray's loop has not stopped yet; asking again")
            try:
                request()
            except Exception:  # the display went away: the loop ends by itself
                log.warning("could not ask the tray's loop to stop", exc_info=True)
            if self._loop_ended.wait(1.0):
                return

    def _shutdown(self) -> None:
        self._stopping.set()
        if self.service is not None:
            self.service.stop()
        if self._history is not None and self._history.poll() is None:
            self._history.terminate()
            self._history.wait(5)
        self.store.close()

    def watch_signals(self, fd: int) -> None:
        """Also stop when SIGTERM/SIGINT shows up on ``fd`` (``signal.set_wakeup_fd``'s pipe).

        The Python-level handler runs only on the main thread, which sits in pystray's X11
        loop waiting for an event; a signal delivered to another thread ran it only at the
        next X event, which may never come: 2 of 50 test runs hung on SIGTERM."""
        self._signal_fd = fd

    def _wait(self) -> bool:
        """Wait one refresh period; True when it is time to stop."""
        fd = self._signal_fd
        if fd is None:
            return self._stopping.wait(REFRESH)
        readable, _, _ = select.select([fd], [], [], REFRESH)
        if readable and {signal.SIGTERM, signal.SIGINT} & set(os.read(fd, 64)):
            self.stop()
        return self._stopping.is_set()

    def _refresh_loop(self) -> None:
        while not self._wait():
            try:
                self.refresh()
            except Exception:  # one bad read must not freeze the icon for good
                log.exception("tray refresh failed")

    def refresh(self) -> None:
        snap = read_snapshot(self.cfg, self.store, self.service)
        if snap == self.snapshot:
            return
        old, self.snapshot = self.snapshot, snap
        if old is None or (old.state, old.unread, old.connected) != (
            snap.state, snap.unread, snap.connected
        ):  # fmt: skip
            self.icon.icon = drawing.draw(snap.state, snap.unread, connected=snap.connected)
        self.icon.title = snap.title
        self.icon.menu = self._menu(snap)
        self.icon.update_menu()

    def _menu(self, snap: Snapshot) -> Any:
        pystray = self._pystray
        items = []
        for entry in menu_entries(snap):
            if entry is not None and entry.label == "-":
                items.append(pystray.Menu.SEPARATOR)
                continue
            items.append(
                pystray.MenuItem(
                    entry.label, self._callback(entry), enabled=entry.enabled,
                    default=entry.default,
                )
            )  # fmt: skip
        return pystray.Menu(*items)

    def _callback(self, entry: Entry) -> Any:
        def run(icon: Any, item: Any) -> None:
            try:
                self.do(entry.action)
            except Exception:  # a failed action must not kill pystray's loop
                log.exception("tray action %s failed", entry.action)

        return run

    def do(self, action: str) -> None:
        """Run a menu action by name (also what tests and the history window call)."""
        now = time.time()
        if action.startswith("open:"):
            self._open(action[5:])
        elif action == "pause-1h":
            dnd.pause(self.store, now + 3600)
        elif action == "pause-tomorrow":
            dnd.pause(self.store, dnd.tomorrow_morning(now))
        elif action == "resume":
            dnd.resume(self.store)
        elif action == "read-all":
            mark_read(self.cfg, self.store, None)
        elif action == "history":
            self._open_history()
        elif action == "quit":
            self.stop()
            return
        self.refresh()

    def _open(self, message_id: str) -> None:
        stored = self.store.get(message_id)
        if stored is None:
            return
        url = safe_url(stored.message.click)
        if url is not None:
            threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
        mark_read(self.cfg, self.store, [message_id])

    def _open_history(self) -> None:
        if self._history is not None and self._history.poll() is None:
            return  # already open
        # A separate process: Tk wants its own main thread, and closing the window gives
        # its memory back.
        from agent.autostart import self_argv

        self._history = subprocess.Popen(
            [*self_argv(), "tray", "--history-window", str(self.cfg.paths.db)]
        )
