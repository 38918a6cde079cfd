"""pystray 0.19's X11 (XEmbed) icon, mended in three places it gets wrong.

1. **Stretching.** It resizes the image to whatever slot the tray gives its window (trayer:
   24 x panel height - 2), so the round icon was a 24x46 oval; ``icon.fit`` keeps it square
   and centred.
2. **Clicks.** It handles ButtonPress but never selects it on its window, so a click did
   nothing.
3. **Docking once.** It asks the tray manager to dock the icon once, at start. A tray that
   is not there yet (the tray started at login before the panel, or the panel restarted), or
   that has its window up but not yet the ``_NET_SYSTEM_TRAY_S<n>`` selection, left the icon
   undocked for good, a 1x1 window nobody sees. The System Tray Protocol has the manager
   announce itself with a ``MANAGER`` client message on the root window when it takes the
   selection; this listens for it and docks then.

Only imported when pystray runs on that backend (``subclass`` is given its Icon class).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from agent.tray import icon as drawing

UNDOCKED = "no system tray to dock the icon into yet; it appears when one starts"
UNDOCKED_EVERY = 60.0  # seconds between two of those lines
_WAITERS = 8  # answers posted when the loop ends: more than the threads that call into it


class _QuietUndocked(logging.Filter):
    """pystray logs "Failed to dock icon" with a traceback each time it finds no tray (at
    start, on every icon change, when the panel exits). Not a bug, and the icon docks later
    (mend 3): one plain line, at most once a minute."""

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


def subclass(base: Any) -> Any:
    """``base`` (``pystray._xorg.Icon``) with the three mends above."""
    import Xlib.display
    from PIL import Image
    from Xlib import X

    logging.getLogger("pystray._base").addFilter(_QuietUndocked())

    class XembedIcon(base):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._manager_atom = self._display.intern_atom("MANAGER")
            mask = X.ExposureMask | X.StructureNotifyMask | X.ButtonPressMask
            self._window.change_attributes(event_mask=mask)
            # MANAGER is sent to the root window with StructureNotifyMask.
            self._display.screen().root.change_attributes(event_mask=X.StructureNotifyMask)
            self._display.flush()
            pystray_messages = self._message_handlers[X.ClientMessage]

            def on_client_message(event: Any) -> None:
                if self._announces_manager(event):
                    self._show()  # on the loop's thread: docks now
                else:
                    pystray_messages(event)

            self._message_handlers[X.ClientMessage] = on_client_message
            self._loop_done = False
            for name in ("_show", "_hide", "_update_icon", "_update_title", "_stop"):
                setattr(self, name, self._unless_done(getattr(self, name)))

        def request_stop(self) -> None:
            """Ask the loop to stop, from any thread or a signal handler, through an X
            connection of its own: pystray's ``stop()`` from another thread posts on the loop's
            shared connection and waits, and python-xlib then hung now and then with the loop
            waiting for a reply the other thread had read."""
            display = Xlib.display.Display(self._display.get_display_name())
            try:
                window = display.create_resource_object("window", self._window.id)
                self._post(display, window, "_PYSTRAY__STOP")  # pystray's name for _stop
            finally:
                display.close()

        def _post(self, display: Any, window: Any, atom: str) -> None:
            event = Xlib.display.event.ClientMessage(
                window=window,
                client_type=display.intern_atom(atom),
                data=(32, (X.CurrentTime, 0, 0, 0, 0)),
            )
            window.send_event(event, event_mask=X.NoEventMask)
            display.flush()

        def _unless_done(self, dispatched: Any) -> Any:
            def call() -> None:
                if not self._loop_done:
                    dispatched()

            return call

        def _mainloop(self) -> None:
            try:
                super()._mainloop()
            finally:
                # pystray's calls from other threads post to the loop and wait for its
                # answer; one posted as the loop ended (SIGTERM during start-up: the setup
                # thread's ``visible = True``) waited forever and the process never exited.
                self._loop_done = True
                for _ in range(_WAITERS):
                    self._queue.put(True)

        def _announces_manager(self, event: Any) -> bool:
            if event.client_type != self._manager_atom:
                return False
            _format, data = event.data
            return bool(data[1] == self._net_system_tray_sx and self._systray_manager is None)

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
