"""pystray 0.19's StatusNotifierItem icon (its ``appindicator`` backend), mended.

The item itself is libayatana-appindicator's (or libappindicator's): it registers with the
desktop's StatusNotifierWatcher and exports the menu over com.canonical.dbusmenu. What
pystray gets wrong around it, found by driving the real item on a real host
(tests/test_tray_sni.py):

1. **Ctrl-C.** Its loop setup resets SIGINT to the default action, so Ctrl-C killed the
   tray on the spot (exit -2): the agent service was never stopped, the store never
   closed. Here the handler the tray installed (``agent.commands.tray``) is kept.
2. **Quitting without a notification daemon.** On the way out it closes "its"
   notification over D-Bus (org.freedesktop.Notifications) even if it never showed one,
   and a session without a notification daemon made every Quit a traceback and exit 1.
   Here that call may fail (logged at debug).
3. **The icon file.** It hands the host the icon as a PNG at a ``tempfile.mktemp`` name
   (a race, and readable by everyone). Here it is created with ``mkstemp``: 0600, ours.

Only imported when pystray runs on that backend (``subclass`` is given its Icon class).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import tempfile
from typing import Any

log = logging.getLogger("pushagent.tray")


class _Notifier:
    """pystray's notifier, whose ``hide`` (called on the way out) may fail."""

    def __init__(self, notifier: Any) -> None:
        self._notifier = notifier

    def notify(self, *args: Any) -> None:
        self._notifier.notify(*args)

    def hide(self) -> None:
        try:
            self._notifier.hide()
        except Exception as exc:  # noqa: BLE001 - a GLib.Error: no notification daemon
            log.debug("no notification to close: %s", exc)


def subclass(base: Any) -> Any:
    """``base`` (``pystray._appindicator.Icon``) with the mends above."""

    class SniIcon(base):  # type: ignore[misc]
        _notifier: Any  # pystray's (GtkIcon): closes its notification on the way out

        def _initialize(self) -> None:
            handler = signal.getsignal(signal.SIGINT)
            super()._initialize()
            self._notifier = _Notifier(self._notifier)
            # None: not installed from Python, leave it; ValueError: not the main thread,
            # where pystray could not change it either
            if handler is not None:
                with contextlib.suppress(ValueError):
                    signal.signal(signal.SIGINT, handler)

        def _update_fs_icon(self) -> None:
            fd, path = tempfile.mkstemp(prefix="edgepush-tray-", suffix=".png")
            with os.fdopen(fd, "wb") as f:
                self.icon.save(f, "PNG")
            self._icon_path = path
            self._icon_valid = True

    return SniIcon
