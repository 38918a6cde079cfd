"""The pystray side of the tray: icon, menu, callbacks, and the refresh thread.

Only this module imports pystray. On plain X11 (pystray's xorg backend) there is no popup
menu: a click runs the default entry, "Open history", whose window offers the rest.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
import webbrowser
from typing import Any

from agent import dnd
from agent.commands.read import mark_read
from agent.config import AgentConfig
from agent.notify.desktop import safe_url
from agent.store import Store
from agent.tray import icon as drawing
from agent.tray.model import UNREAD_STATES, Entry, Recent, Snapshot, menu_entries
from agent.tray.service import ServiceHandle, start_service

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


def _enable_clicks(icon: Any) -> None:
    """pystray 0.19's X11 backend handles ButtonPress but never selects it on its window, so
    a click on the icon did nothing; select it (only on that backend)."""
    window, display = getattr(icon, "_window", None), getattr(icon, "_display", None)
    if window is None or display is None or not hasattr(window, "change_attributes"):
        return
    from Xlib import X

    window.change_attributes(event_mask=X.ExposureMask | X.StructureNotifyMask | X.ButtonPressMask)
    display.flush()


class TrayApp:
    """``run()`` blocks in pystray's loop until Quit (or ``stop()``)."""

    def __init__(self, cfg: AgentConfig, *, with_service: bool = True) -> None:
        self.cfg = cfg
        self.store = Store(cfg.paths.db).open()
        self.service = start_service(cfg) if with_service else None
        self.snapshot: Snapshot | None = None
        self._stopping = threading.Event()
        self._history: subprocess.Popen[bytes] | None = None
        import pystray

        self._pystray = pystray
        snap = read_snapshot(cfg, self.store, self.service)
        self.icon = pystray.Icon(
            "edgepush", drawing.draw(snap.state, snap.unread, connected=snap.connected),
            snap.title, self._menu(snap),
        )  # fmt: skip
        self.snapshot = snap

    def run(self) -> None:
        refresher = threading.Thread(target=self._refresh_loop, name="tray-refresh", daemon=True)

        def setup(icon: Any) -> None:
            icon.visible = True
            _enable_clicks(icon)
            refresher.start()

        try:
            self.icon.run(setup=setup)
        finally:
            self._shutdown()

    def stop(self) -> None:
        self._stopping.set()
        self.icon.stop()

    def _shutdown(self) -> None:
        self._stopping.set()
        if self.service is not None:
            self.service.stop()
        if self._history is not None and self._history.poll() is None:
            self._history.terminate()
            self._history.wait(5)
        self.store.close()

    def _refresh_loop(self) -> None:
        while not self._stopping.wait(REFRESH):
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
