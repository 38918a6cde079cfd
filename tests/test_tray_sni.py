"""``pushagent tray`` on a desktop with a StatusNotifierItem host: a real menu, the count.

The host is a real one from Debian (tests/sni.py: gtk-sni-tray-standalone, which runs the
watcher and registers as the host, on the test's Xvfb and private bus); the item is the
real tray process, pystray's appindicator backend over libayatana-appindicator. The test
reads the item the way a host does (its D-Bus properties and its dbusmenu) and clicks its
entries the way a host does (dbusmenu ``Event(id, "clicked")``). No notification daemon
runs here (``bare_desktop``): the tray must not need one.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from agent import dnd
from agent.store import Store
from agent.tray import icon
from tests.desktop import Desktop
from tests.helpers import wait_for
from tests.mosquitto import Mosquitto
from tests.sni import Bus, Item, start_host
from tests.test_tray import Tray, _has_colour, _shot

MENU = ["Pause for 1 hour", "Pause until tomorrow", "Resume", "Mark all read", "Open history",
        "-", "Quit"]  # fmt: skip


@pytest.fixture(autouse=True)
def _pygobject() -> None:
    """The SNI backend needs PyGObject (the dev extra, built by packaging/dev.sh test)."""
    import importlib.util

    assert importlib.util.find_spec("gi") is not None, (
        "PyGObject is not installed in this venv: packaging/dev.sh test installs it"
    )


def _publish(broker: Mosquitto, topic: str, text: str) -> None:
    subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t", topic,
         "-m", text], timeout=30, check=True,
    )  # fmt: skip


def _icon(item: Item) -> Image.Image | None:
    """The icon the item shows now: libayatana hands the host a PNG file (IconName)."""
    path = Path(item.prop("IconName"))
    try:
        with Image.open(path) as img:
            return img.convert("RGBA")
    except FileNotFoundError:  # replaced by a newer icon between the two reads
        return None


def _title_is(item: Item, title: str) -> None:
    wait_for(lambda: item.prop("Title") == title, timeout=20, interval=0.2,
             what=f"the item's title {title!r} (now {item.prop('Title')!r})")  # fmt: skip


def _menu_head(item: Item, title: str) -> list[str]:
    """The menu's labels once its first entry (the title line) says ``title``: the menu is
    exported again after the title changes."""

    def headed() -> list[str] | None:
        labels = item.labels()
        return labels if labels[0] == title else None

    return wait_for(headed, timeout=20, interval=0.2, what=f"the menu headed {title!r}")


def _badge_on_icon(item: Item) -> bool:
    img = _icon(item)
    return img is not None and _has_colour(img, icon.BADGE)


def _panel_shows(desktop: Desktop, shot: Path, colour: tuple[int, int, int]) -> bool:
    """Whether the host's panel (gtk-sni-tray-standalone's bar, the top 30 px of the
    screen) shows ``colour`` now: the icon as the host draws it."""
    return _has_colour(_shot(desktop, shot, "root").crop((0, 0, 1024, 30)), colour, 30)


def _store(home: Path) -> Store:
    return Store(home / "data" / "pushagent.db").open()


def _paused(home: Path) -> bool:
    with _store(home) as store:
        return dnd.paused_until(store, time.time()) is not None


@pytest.mark.desktop
def test_tray_on_a_statusnotifier_host(
    bare_desktop: Desktop, mosquitto: Mosquitto, home: Path, tmp_path: Path
) -> None:
    start_host(bare_desktop)
    bus = Bus(bare_desktop)
    args = ["tray", "--server", mosquitto.url, "--topic", "sni/#", "--notifier", "log"]
    tray = Tray(bare_desktop, home, tmp_path / "tray.log", args)
    try:
        item = Item.only(bus, tray)
        assert (item.prop("Id"), item.prop("Status")) == ("edgepush", "Active")
        _title_is(item, "edgepush: connected")
        assert not bare_desktop.windows("^edgepush: ")  # the host shows it, no X11 icon
        first = wait_for(lambda: _icon(item), timeout=20, interval=0.2, what="the icon file")
        assert _has_colour(first, icon.COLOURS["connected"]) and not _has_colour(first, icon.BADGE)
        assert stat.S_IMODE(os.stat(item.prop("IconName")).st_mode) == 0o600
        shot = tmp_path / "panel.png"
        wait_for(lambda: _panel_shows(bare_desktop, shot, icon.COLOURS["connected"]),
                 timeout=20, interval=0.5, what="the icon in the host's panel")  # fmt: skip
        assert not _panel_shows(bare_desktop, shot, icon.BADGE)
        menu = {e.label: e.enabled for e in item.menu()}
        assert item.labels() == ["edgepush: connected", "No messages yet", "-", *MENU]
        assert not menu["Resume"] and not menu["Mark all read"] and menu["Open history"]

        # messages arrive: the count in the title, on the icon and in the menu
        for i in range(3):
            _publish(mosquitto, "sni/x", f"m{i}")
        _title_is(item, "edgepush: connected, 3 unread")
        wait_for(lambda: _badge_on_icon(item), timeout=20, interval=0.2, what="the badge")
        wait_for(lambda: _panel_shows(bare_desktop, shot, icon.BADGE), timeout=20,
                 interval=0.5, what="the badge in the host's panel")  # fmt: skip
        labels = _menu_head(item, "edgepush: connected, 3 unread")
        assert sorted(labels[1:4]) == ["● sni/x: m0", "● sni/x: m1", "● sni/x: m2"]
        assert labels[4:] == ["-", *MENU]

        # the menu's entries, clicked through the host's protocol, act on the store
        item.click("Pause for 1 hour")
        wait_for(lambda: _paused(home), timeout=20, interval=0.2, what="the pause in the store")
        _title_is(item, "edgepush: connected, 3 unread, paused")
        _menu_head(item, "edgepush: connected, 3 unread, paused")
        item.click("Mark all read")
        _title_is(item, "edgepush: connected, paused")
        with _store(home) as store:
            assert {s.state for s in store.query()} == {"read"}
        _menu_head(item, "edgepush: connected, paused")
        item.click("Resume")
        _title_is(item, "edgepush: connected")
        assert not _paused(home)
        _menu_head(item, "edgepush: connected")
        item.click("Open history")
        wait_for(lambda: bare_desktop.windows("^edgepush history$"), timeout=30, what="history")

        item.click("Quit")
        assert tray.proc.wait(30) == 0, tray.problem()
        wait_for(lambda: not bus.registered_items(), timeout=20, interval=0.2,
                 what="the item gone from the watcher")  # fmt: skip
        assert not bare_desktop.windows("^edgepush history$")  # closed with the tray
    finally:
        tray.end()
    assert "Traceback" not in tray.log.read_text(), tray.problem()


@pytest.mark.desktop
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_end_the_sni_tray_cleanly(
    sig: signal.Signals, bare_desktop: Desktop, home: Path, tmp_path: Path
) -> None:
    """Ctrl-C and SIGTERM end it as Quit does: exit 0 after closing down (pystray reset
    SIGINT to its default, which killed the tray on the spot)."""
    start_host(bare_desktop)
    bus = Bus(bare_desktop)
    tray = Tray(bare_desktop, home, tmp_path / "tray.log", ["tray", "--no-service"])
    try:
        Item.only(bus, tray)
        tray.proc.send_signal(sig)
        assert tray.proc.wait(30) == 0, tray.problem()
        wait_for(lambda: not bus.registered_items(), timeout=20, interval=0.2,
                 what="the item gone from the watcher")  # fmt: skip
    finally:
        tray.end()
    assert "Traceback" not in tray.log.read_text(), tray.problem()
