"""pystray 0.19's X11 (XEmbed) icon, mended where it gets things wrong.

1. **One thread talks to X.** pystray shares one python-xlib ``Display`` between its loop
   and every thread that changes the icon (its setup thread, our refresh): a call from
   another thread posts a message on that connection and waits for the loop to run it.
   python-xlib's locking does not survive that. Caught under load with faulthandler: the
   loop waited forever for the reply to its own ``get_geometry`` (in ``send_and_recv``,
   on the lock of a thread it took to be reading for it), while the refresh thread waited
   in ``title = ...`` for the loop; the title never changed again, SIGTERM never ended the
   process, and an icon caught that way at start stayed an undocked 1x1 window. Here the
   loop does all of it: ``run_in_loop`` waits on the X socket *and* a wake-up pipe with a
   timeout, and calls the caller's ``tick`` on its own thread; pystray's setup thread is
   given nothing to do.
2. **Stretching.** It resizes the image to whatever slot the tray gives its window (trayer:
   24 x panel height - 2), so the round icon was a 24x46 oval; ``icon.fit`` keeps it square
   and centred.
3. **Clicks.** It handles ButtonPress but never selects it on its window, so a click did
   nothing.
4. **Docking.** It asks the tray manager to dock the icon when it finds one (twice at
   start, and again on every icon change), and remembers that manager whether or not it
   took the icon. Two requests in a row made trayer embed the icon into two sockets and
   hand it back to the root window, unmapped; a tray that is not there yet (started at
   login before the panel, or the panel restarted) left the icon undocked for good. Either
   way a 1x1 window nobody sees. Here one request is pending at a time; the icon docks when
   a new manager announces itself (``MANAGER`` on the root window, System Tray Protocol),
   and, judged by its window's real parent (ReparentNotify), asks again while a manager
   exists and it is still not docked.

Only imported when pystray runs on that backend (``subclass`` is given its Icon class).
"""

from __future__ import annotations

import logging
import os
import select
import time
from collections.abc import Callable, Iterator
from typing import Any

from agent.tray import icon as drawing

log = logging.getLogger("pushagent.tray")
UNDOCKED = "no system tray to dock the icon into yet; it appears when one starts"
UNDOCKED_EVERY = 60.0  # seconds between two of those lines
REDOCK_AFTER = 5.0  # seconds a dock request may take before it is sent again


class _QuietUndocked(logging.Filter):
    """pystray logs "Failed to dock icon" with a traceback each time it finds no tray (at
    start, on every icon change, when the panel exits). Not a bug, and the icon docks later
    (mend 4): one plain line, at most once a minute."""

    def __init__(self) -> None:
        super().__init__()
        self._last = -UNDOCKED_EVERY

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != "Failed to dock icon":
            return True
        now = time.monotonic()
        if now - self._last < UNDOCKED_EVERY:
            return False
        self._last = now
        record.msg, record.args, record.exc_info, record.levelno = (
            UNDOCKED,
            (),
            None,
            logging.WARNING,
        )
        record.levelname = "WARNING"
        return True


def drain(fd: int) -> bytes:
    """What a non-blocking pipe holds now."""
    data = b""
    while True:
        try:
            chunk = os.read(fd, 512)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


def subclass(base: Any) -> Any:
    """``base`` (``pystray._xorg.Icon``) with the mends above."""
    from PIL import Image
    from Xlib import X

    logging.getLogger("pystray._base").addFilter(_QuietUndocked())

    class XembedIcon(base):  # type: ignore[misc]
        _systray_manager: Any  # pystray's: the manager window it last asked to dock

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._tick: Callable[[bytes], None] = lambda woken: None
            self._wake_fd: int | None = None
            self._every = 1.0
            self._root = self._display.screen().root
            self._parent = self._root.id  # where the X server has our window now
            self._dock_asked: float | None = None
            self._manager_atom = self._display.intern_atom("MANAGER")
            mask = X.ExposureMask | X.StructureNotifyMask | X.ButtonPressMask
            self._window.change_attributes(event_mask=mask)
            # MANAGER is sent to the root window with StructureNotifyMask.
            self._root.change_attributes(event_mask=X.StructureNotifyMask)
            self._display.flush()
            pystray_messages = self._message_handlers[X.ClientMessage]

            def on_client_message(event: Any) -> None:
                if event.client_type == self._manager_atom:
                    self._on_manager(event)
                else:
                    pystray_messages(event)

            self._message_handlers[X.ClientMessage] = on_client_message
            self._message_handlers[X.ReparentNotify] = self._on_reparent

        def run_in_loop(self, tick: Callable[[bytes], None], *, wake_fd: int, every: float) -> None:
            """Show the icon and run the loop until ``stop()``, all on this thread.

            ``tick(woken)`` runs on this thread every ``every`` seconds and as soon as
            ``wake_fd`` (a non-blocking pipe) is readable, with what it held; it may change
            the icon and call ``stop()``. Nothing else may touch the icon meanwhile."""
            self._tick, self._wake_fd, self._every = tick, wake_fd, every
            self.run(setup=_no_setup)

        @property
        def docked(self) -> bool:
            return bool(self._parent != self._root.id)

        def _events(self) -> Iterator[Any]:
            # On the loop's thread (pystray's ``_run`` has set ``_thread``): its calls run
            # here directly instead of being posted to the loop and waited for.
            self.visible = True
            display = self._display
            fds = [display.fileno()] + ([self._wake_fd] if self._wake_fd is not None else [])
            due = time.monotonic()
            while True:
                # python-xlib reads events while it waits for a reply, so a handler or a
                # tick may leave some queued: select only once none is.
                if display.pending_events():
                    yield display.next_event()
                    continue
                now = time.monotonic()
                woken = b""
                if now < due:
                    readable, _, _ = select.select(fds, [], [], due - now)
                    if not readable:
                        continue
                    if self._wake_fd is None or self._wake_fd not in readable:
                        continue  # X events
                    woken = drain(self._wake_fd)
                due = time.monotonic() + self._every
                if self._running:  # not once stop() has destroyed the window
                    self._redock_if_dropped()
                    self._tick(woken)

        def _on_reparent(self, event: Any) -> None:
            if event.window.id == self._window.id:
                self._parent = event.parent.id
                log.debug("icon window reparented into 0x%x", self._parent)

        def _on_manager(self, event: Any) -> None:
            """A tray manager took the selection (System Tray Protocol, "Locating the
            system tray"): dock into it unless already docked there. pystray's remembered
            manager may be stale (gone, or one that never took the icon), so it is not
            asked."""
            _format, data = event.data
            if data[1] != self._net_system_tray_sx:
                return
            current = self._systray_manager
            log.debug("tray manager 0x%x announced; docked=%s", data[2], self.docked)
            if self.docked and current is not None and current.id == data[2]:
                return
            self._dock_again()

        def _redock_if_dropped(self) -> None:
            """A dock request the manager dropped (sent while it was still setting up), or
            a manager that came while the icon was between two, would leave the icon
            undocked until the next one: ask again, one request at a time."""
            asked = self._dock_asked
            if self.docked or not self.visible:
                return
            if asked is not None and time.monotonic() - asked < REDOCK_AFTER:
                return
            if self._get_systray_manager() is None:
                return  # no tray: its MANAGER message will say when there is one
            log.debug("not docked, and a tray is there; asking it")
            self._dock_again()

        def _dock_again(self) -> None:
            self._systray_manager = None
            self._dock_asked = None
            self._show()

        def _dock_window(self) -> None:
            """pystray asks for docking on every icon change and twice at start (its
            ``_update_icon`` and ``_show``). trayer took the second request of a pair
            into a second socket and then handed the icon back to the root window,
            unmapped: seen under load as "reparented into 0x600026, 0x600027, then the
            root", a 1x1 icon for good. So: no request while docked or while one is
            pending (up to ``REDOCK_AFTER``)."""
            asked = self._dock_asked
            pending = asked is not None and time.monotonic() - asked < REDOCK_AFTER
            if self._systray_manager is not None and (self.docked or pending):
                return
            super()._dock_window()
            if self._systray_manager is not None:
                self._dock_asked = time.monotonic()
                log.debug("asked tray manager 0x%x to dock", self._systray_manager.id)

        def _on_destroy_notify(self, event: Any) -> None:
            # pystray's handler dereferences the manager even when it is already gone
            if self._systray_manager is not None:
                super()._on_destroy_notify(event)

        def _assert_icon_data(self, width: int, height: int) -> None:
            current: Any = getattr(self, "_icon_data", None)
            if current and current.size == (width, height):
                return
            fitted = drawing.fit(self._icon, width, height)
            data = Image.new("RGB", (width, height))  # black behind, as pystray's own
            data.paste(fitted, (0, 0), fitted)
            data.tostring = data.tobytes  # type: ignore[attr-defined]  # python-xlib calls it
            self._icon_data = data

    return XembedIcon


def _no_setup(icon: Any) -> None:
    """pystray's setup thread: the icon is shown by the loop itself (``_events``)."""
