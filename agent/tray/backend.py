"""Can a tray run here, and with which pystray backend: decided before anything starts.

``load()`` imports pystray (which picks its backend and, on X11, opens the display at import
time) and turns each way that fails into one line saying what to do, raised as
``UsageError`` (exit 2). The tray command calls it before it reads the store or starts the
service, so a tray that cannot show leaves nothing behind: no database, no connection.
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import agent
from agent.errors import UsageError

log = logging.getLogger("pushagent.tray")
# The source checkout this agent runs from (``pip install -e`` or PYTHONPATH), if it is one.
_ROOT = Path(agent.__file__).resolve().parent.parent
CHECKOUT: Path | None = _ROOT if (_ROOT / "pyproject.toml").is_file() else None
NO_TRAY = "for the agent without a tray use 'pushagent run'"
# What the 'desktop' extra brings that the tray imports (top-level module names).
_EXTRA_MODULES = {"pystray", "PIL", "Xlib", "six"}


def install_hint(*, frozen: bool, prefix: Path, executable: Path, checkout: Path | None) -> str:
    """How to get pystray and Pillow for the way this pushagent was installed. Pure."""
    if frozen:
        return (
            "this pushagent binary was built without the tray; use a release binary "
            "(they include it) or build one with the desktop extra (docs/INSTALL.md)"
        )
    if "pipx" in prefix.parts and "venvs" in prefix.parts:
        return f"pipx inject {prefix.name} pystray Pillow"
    if checkout is not None:
        return f"{executable} -m pip install -e '{checkout}[desktop]'"
    return f"{executable} -m pip install 'edgepush[desktop]'"


def _missing_extra() -> UsageError:
    hint = install_hint(
        frozen=bool(getattr(sys, "frozen", False)),
        prefix=Path(sys.prefix),
        executable=Path(sys.executable),
        checkout=CHECKOUT,
    )
    return UsageError(
        "the tray needs pystray and Pillow (the 'desktop' extra), not installed here; "
        f"install them with: {hint}"
    )


def _no_display(exc: BaseException) -> UsageError:
    """python-xlib's DisplayNameError (DISPLAY empty or malformed) or DisplayConnectionError."""
    name = type(exc).__name__
    if name == "DisplayNameError" and exc.args and not exc.args[0]:
        why = "there is no display (DISPLAY is not set)"
    elif name == "DisplayConnectionError" and len(exc.args) >= 2:
        why = f"cannot open the display {exc.args[0]}: {exc.args[1]}"
    else:
        why = f"cannot open the display: {exc}"
    return UsageError(f"the tray needs a graphical session, and {why}; {NO_TRAY}")


SNI_WATCHER = "org.kde.StatusNotifierWatcher"
SNI_PACKAGES = "python3-gi gir1.2-ayatanaappindicator3-0.1"


def choose(*, sni_host: bool, appindicator: bool) -> str:
    """pystray's backend for this desktop. Pure.

    A StatusNotifierItem host (GNOME with the AppIndicator extension, KDE, XFCE, most
    panels) shows a real menu and the count through pystray's ``appindicator`` backend,
    which needs PyGObject and AyatanaAppIndicator; plain X11 trays keep the ``xorg`` one.
    """
    return "appindicator" if sni_host and appindicator else "xorg"


def sni_host_present(timeout: float = 2.0) -> bool:
    """Whether the session bus has a StatusNotifierWatcher (the SNI host's registry)."""
    import asyncio

    async def ask() -> bool:
        from dbus_fast import BusType, Message
        from dbus_fast.aio import MessageBus

        bus = await MessageBus(bus_type=BusType.SESSION).connect()
        try:
            reply = await bus.call(
                Message(
                    destination="org.freedesktop.DBus",
                    path="/org/freedesktop/DBus",
                    interface="org.freedesktop.DBus",
                    member="NameHasOwner",
                    signature="s",
                    body=[SNI_WATCHER],
                )
            )
        finally:
            bus.disconnect()
        return bool(reply is not None and reply.body and reply.body[0])

    try:
        return asyncio.run(asyncio.wait_for(ask(), timeout))
    except Exception:  # no bus, no dbus-fast, a slow bus: no SNI host we can use  # noqa: BLE001
        return False


def _appindicator_importable() -> bool:
    try:
        import gi  # type: ignore[import-not-found, unused-ignore]

        gi.require_version("AyatanaAppIndicator3", "0.1")
        from gi.repository import AyatanaAppIndicator3  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except (ImportError, ValueError):
        return False
    return True


def icon_class(pystray: ModuleType, *, forced: str | None) -> Any:
    """The Icon class to use: ``forced`` (PYSTRAY_BACKEND, honoured by pystray itself) or
    ``choose``'s pick; on Linux only (macOS and Windows have one backend each)."""
    if forced or not sys.platform.startswith("linux"):
        return pystray.Icon
    sni = sni_host_present()
    appindicator = sni and _appindicator_importable()
    name = choose(sni_host=sni, appindicator=appindicator)
    if sni and not appindicator:
        log.warning(
            "this desktop has a StatusNotifierItem host, but the tray menu there needs "
            "PyGObject and AyatanaAppIndicator (Debian: %s); using the plain X11 icon",
            SNI_PACKAGES,
        )
    try:
        return importlib.import_module(f"pystray._{name}").Icon
    except Exception as exc:  # noqa: BLE001 - the backend pystray picked still works
        log.warning("pystray's %s backend cannot load (%s); using its default", name, exc)
        return pystray.Icon


def load() -> ModuleType:
    """pystray, imported; or ``UsageError`` with the one line that says what to do."""
    try:
        importlib.import_module("PIL.Image")  # the icon is drawn with it
        pystray = importlib.import_module("pystray")
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] in _EXTRA_MODULES:
            raise _missing_extra() from None
        raise
    except ImportError as exc:  # pystray found no backend it can load
        raise UsageError(f"no system-tray backend works here ({exc}); {NO_TRAY}") from None
    except Exception as exc:
        if type(exc).__module__.startswith("Xlib"):
            raise _no_display(exc) from None
        raise
    return pystray
