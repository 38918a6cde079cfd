"""The pystray side of the tray: icon, menu, callbacks, and the periodic refresh.

pystray comes from ``agent.tray.backend`` (which imports it); its X11 icon is mended in
``agent.tray.xembed``, whose loop runs the refresh on its own thread (the only one that
may touch that icon). Other backends get a refresh thread. On plain X11 (pystray's xorg
backend) there is no popup menu: a click runs the default entry, "Open history", whose
window offers the rest.
"""

from __future__ import annotations

import contextlib
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
from agent.notify.text import safe_url
from agent.store import Store
from agent.tray import backend
from agent.tray import icon as drawing
from agent.tray.model import UNREAD_STATES, Entry, Recent, Snapshot, menu_entries
from agent.tray.service import ServiceHandle, start_service
from agent.tray.xembed import drain

log = logging.getLogger("pushagent.tray")
REFRESH = 1.0


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
    sealed = store.unread_undecryptable()  # "encrypted message on TOPIC", not read yet
    recent = tuple(
        Recent(s.message.id, s.message.topic, s.message.title or s.message.message[:80],
               s.state in UNREAD_STATES or s.message.id in sealed)
        for s in store.query(limit=10)
    )  # fmt: skip
    problem = None
    if service is not None and service.error is not None:
        problem = f"agent stopped: {str(service.error)[:80]}"
    return Snapshot(
        problem=problem,
        connected=connected,
        unread=sum(counts.get(s, 0) for s in UNREAD_STATES) + len(sealed),
        paused=dnd.paused_until(store, now) is not None,
        recent=recent,
    )


def icon_class(pystray: ModuleType) -> Any:
    """The Icon of the backend for this desktop (``backend.icon_class``: StatusNotifierItem
    where there is a host for it, else X11), mended (``agent.tray.sni``, ``.xembed``)."""
    from agent.config import pystray_backend

    base = backend.icon_class(pystray, forced=pystray_backend())
    if base.__module__ == "pystray._appindicator":
        from agent.tray import sni

        return sni.subclass(base)
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
        # On StatusNotifierItem the menu's callbacks (GTK's thread) and the refresh thread
        # both refresh; one at a time, so the icon never ends on the older snapshot.
        self._refreshing = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()  # stop() and signals wake the loop with it
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._history: subprocess.Popen[bytes] | None = None
        pystray = self._pystray
        snap = read_snapshot(cfg, self.store, self.service)
        self.icon = icon_class(pystray)(
            "edgepush", drawing.draw(snap.state, snap.unread, connected=snap.connected),
            snap.title, self._menu(snap),
        )  # fmt: skip
        self.snapshot = snap

    @property
    def wakeup_fd(self) -> int:
        """A non-blocking pipe's write end for ``signal.set_wakeup_fd``: SIGTERM and SIGINT
        then wake the loop wherever the Python-level handler runs (only on the main thread,
        at its next bytecode, which may be long coming while it waits in C)."""
        return self._wake_w

    def run(self) -> None:
        if self._stopping.is_set():
            self._shutdown()
            return
        try:
            run_in_loop = getattr(self.icon, "run_in_loop", None)  # agent.tray.xembed's
            if run_in_loop is not None:
                run_in_loop(self._tick, wake_fd=self._wake_r, every=REFRESH)
            else:
                self._run_threaded()
        finally:
            self._shutdown()

    def stop(self) -> None:
        """End the tray, from any thread or a signal handler, also before its loop runs."""
        self._stopping.set()
        # a full pipe has a wake-up waiting already
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")

    def _tick(self, woken: bytes) -> None:
        """The X11 loop's periodic call, on its thread: stop, or refresh the icon."""
        if {signal.SIGTERM, signal.SIGINT} & set(woken):
            self._stopping.set()
        if self._stopping.is_set():
            self.icon.stop()
            return
        self._refresh_logged()

    def _run_threaded(self) -> None:
        """Other backends (StatusNotifierItem): pystray's own thread-safe calls, and a
        refresh thread that also ends the loop."""
        refresher = threading.Thread(target=self._refresh_loop, name="tray-refresh", daemon=True)

        def setup(icon: Any) -> None:
            icon.visible = True
            refresher.start()

        self.icon.run(setup=setup)

    def _refresh_loop(self) -> None:
        while True:
            readable, _, _ = select.select([self._wake_r], [], [], REFRESH)
            if readable and {signal.SIGTERM, signal.SIGINT} & set(drain(self._wake_r)):
                self._stopping.set()
            if self._stopping.is_set():
                self.icon.stop()
                return
            self._refresh_logged()

    def _refresh_logged(self) -> None:
        try:
            self.refresh()
        except Exception:  # one bad read must not freeze the icon for good
            log.exception("tray refresh failed")

    def _shutdown(self) -> None:
        self._stopping.set()
        if self.service is not None:
            self.service.stop()
        if self._history is not None and self._history.poll() is None:
            self._history.terminate()
            self._history.wait(5)
        self.store.close()

    def refresh(self) -> None:
        with self._refreshing:
            self._refresh()

    def _refresh(self) -> None:
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
