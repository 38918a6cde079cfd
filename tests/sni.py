"""A real StatusNotifierItem host on a test's desktop, and a D-Bus client to read items.

Both are real programs from Debian. The watcher (the org.kde.StatusNotifierWatcher registry)
is ``status-notifier-watcher`` (haskell-status-notifier-item-utils); alone, with no host, it
is what a session looks like when the registry runs but nothing shows items. The host is
``gtk-sni-tray-standalone`` (haskell-gtk-sni-tray-utils): a GTK panel on the test's Xvfb
that registers with the watcher and shows the items' icons and menus, as a desktop's panel
does. Both talk only to the test's private session bus (``Desktop.env``).

``Bus`` is a plain client (dbus-fast) for what a host reads of an item: its properties
(org.kde.StatusNotifierItem) and its menu (com.canonical.dbusmenu), and for clicking menu
entries the way a host does (``Event(id, "clicked")``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from tests.desktop import Desktop
from tests.helpers import wait_for

WATCHER = "org.kde.StatusNotifierWatcher"
WATCHER_PATH = "/StatusNotifierWatcher"
ITEM = "org.kde.StatusNotifierItem"
DBUSMENU = "com.canonical.dbusmenu"
T = TypeVar("T")


@dataclass
class MenuEntry:
    id: int
    label: str
    enabled: bool
    separator: bool


class Bus:
    """Calls on the desktop's session bus, one connection per call (tests are not hot)."""

    def __init__(self, desktop: Desktop) -> None:
        self.address = desktop.env["DBUS_SESSION_BUS_ADDRESS"]

    def _run(self, job: Callable[[MessageBus], Awaitable[T]]) -> T:
        async def go() -> T:
            bus = await MessageBus(bus_address=self.address).connect()
            try:
                return await asyncio.wait_for(job(bus), 10)
            finally:
                bus.disconnect()

        return asyncio.run(go())

    def call(self, dest: str, path: str, iface: str, member: str, sig: str = "",
             body: list[Any] | None = None) -> list[Any]:  # fmt: skip
        async def job(bus: MessageBus) -> list[Any]:
            reply = await bus.call(
                Message(destination=dest, path=path, interface=iface, member=member,
                        signature=sig, body=body or [])
            )  # fmt: skip
            assert reply is not None
            if reply.message_type == MessageType.ERROR:
                raise DBusError(f"{member} on {dest}{path}: {reply.error_name} {reply.body}")
            return list(reply.body)

        return self._run(job)

    def get(self, dest: str, path: str, iface: str, prop: str) -> Any:
        (value,) = self.call(dest, path, "org.freedesktop.DBus.Properties", "Get", "ss",
                             [iface, prop])  # fmt: skip
        return value.value

    def has_owner(self, name: str) -> bool:
        return bool(self.call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                              "org.freedesktop.DBus", "NameHasOwner", "s", [name])[0])  # fmt: skip

    def registered_items(self) -> list[str]:
        return list(self.get(WATCHER, WATCHER_PATH, WATCHER, "RegisteredStatusNotifierItems"))

    def host_registered(self) -> bool:
        return bool(self.get(WATCHER, WATCHER_PATH, WATCHER, "IsStatusNotifierHostRegistered"))

    def item_path(self, name: str) -> str | None:
        """The object path under which ``name`` exports org.kde.StatusNotifierItem (libayatana's
        is /org/ayatana/NotificationItem/<id>), found by introspection as a host does when the
        watcher lists only the bus name."""

        async def job(bus: MessageBus) -> str | None:
            todo = ["/"]
            while todo:
                path = todo.pop()
                node = await bus.introspect(name, path)
                if any(i.name == ITEM for i in node.interfaces):
                    return path
                todo += [f"{path.rstrip('/')}/{n.name}" for n in node.nodes if n.name]
            return None

        return self._run(job)


class DBusError(AssertionError):
    pass


class Item:
    """One registered StatusNotifierItem, read and clicked the way a host does."""

    def __init__(self, bus: Bus, name: str, path: str) -> None:
        self.bus, self.name, self.path = bus, name, path

    @classmethod
    def only(cls, bus: Bus, tray: Any, timeout: float = 30) -> Item:
        """The one item the watcher has registered, once ``tray`` (a ``Tray``) has one."""
        try:
            items = wait_for(lambda: bus.registered_items() or None, timeout=timeout,
                             interval=0.2, what="an item registered with the watcher")  # fmt: skip
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{tray.problem()}") from None
        assert len(items) == 1, items
        name, _, path = items[0].partition("/")  # "service" or "service/path" (both seen)
        found = f"/{path}" if path else bus.item_path(name)
        assert found is not None, f"{name} exports no {ITEM}"
        return cls(bus, name, found)

    def prop(self, name: str) -> Any:
        return self.bus.get(self.name, self.path, ITEM, name)

    @property
    def menu_path(self) -> str:
        return str(self.prop("Menu"))

    def menu(self) -> list[MenuEntry]:
        """The top level of the item's menu (GetLayout of the root, all depths)."""
        _, root = self.bus.call(self.name, self.menu_path, DBUSMENU, "GetLayout", "iias",
                                [0, -1, []])  # fmt: skip
        entries = []
        for child in root[2]:
            item_id, props, _ = child.value
            values = {k: v.value for k, v in props.items()}
            entries.append(MenuEntry(
                item_id, str(values.get("label", "")), bool(values.get("enabled", True)),
                values.get("type") == "separator",
            ))  # fmt: skip
        return entries

    def labels(self) -> list[str]:
        return ["-" if e.separator else e.label for e in self.menu()]

    def click(self, label: str) -> None:
        """Click the menu entry ``label`` as a host does when the user picks it."""
        (entry,) = [e for e in self.menu() if e.label == label]
        assert entry.enabled, f"{label!r} is disabled"
        self.bus.call(self.name, self.menu_path, DBUSMENU, "Event", "isvu",
                      [entry.id, "clicked", Variant("s", ""), 0])  # fmt: skip


def start_host(desktop: Desktop, *, watcher_only: bool = False) -> None:
    """A real SNI host (or only the watcher) on ``desktop``, ready when this returns.

    The watcher is always Debian's status-notifier-watcher, started first (unless one runs):
    ``gtk-sni-tray-standalone --watcher`` runs its own in the same process, but 1 start in 6
    its host asked that watcher before it had exported its object (UnknownObject) and the
    program exited."""
    bus = Bus(desktop)
    if not bus.has_owner(WATCHER):
        watcher = desktop.spawn(["status-notifier-watcher"], "sni-watcher")
        _wait_alive(watcher, lambda: bus.has_owner(WATCHER) and not bus.host_registered(),
                    desktop, "sni-watcher", "status-notifier-watcher")  # fmt: skip
    if watcher_only:
        return
    host = desktop.spawn(["gtk-sni-tray-standalone"], "sni-host")
    _wait_alive(host, bus.host_registered, desktop, "sni-host", "gtk-sni-tray-standalone")


def _wait_alive(proc: Any, ready: Callable[[], bool], desktop: Desktop, log: str,
                what: str) -> None:  # fmt: skip
    def check() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}: {desktop.log(log)}")
        try:
            return ready()
        except DBusError:  # the name is there, its object not yet
            return False

    wait_for(check, timeout=30, interval=0.2, what=what)
