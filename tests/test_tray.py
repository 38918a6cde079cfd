"""``pushagent tray``: the model and icon in-process; the real icon in a real tray on Xvfb."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent.store import Store
from agent.tray import icon
from agent.tray.model import Recent, Snapshot, menu_entries
from tests.desktop import Desktop
from tests.helpers import child_env, spawn, wait_for
from tests.mosquitto import Mosquitto
from tests.notifyhelp import msg


def test_menu_entries() -> None:
    recent = tuple(Recent(f"id{i}", "home", f"msg {i}", unread=i > 7) for i in range(10))
    snap = Snapshot(connected=True, unread=2, paused=False, recent=recent)
    entries = menu_entries(snap)
    labels = [e.label for e in entries]
    assert labels[0] == "edgepush: connected, 2 unread"
    assert labels[1:11] == [f"{'● ' if i > 7 else ''}home: msg {i}" for i in range(9, -1, -1)]
    assert labels[11:] == [
        "-", "Pause for 1 hour", "Pause until tomorrow", "Resume", "Mark all read",
        "Open history", "-", "Quit",
    ]  # fmt: skip
    actions = {e.label: e for e in entries}
    assert actions["home: msg 0"].action == "open:id0"
    assert not actions["Resume"].enabled and actions["Mark all read"].enabled
    assert actions["Open history"].default
    paused = menu_entries(Snapshot(connected=False, unread=0, paused=True))
    assert paused[0].label == "edgepush: disconnected, paused"
    assert paused[1].label == "No messages yet"
    assert {e.label: e.enabled for e in paused}["Resume"] is True
    broken = Snapshot(connected=False, unread=0, paused=False, problem="agent stopped: no server")
    assert broken.title == "edgepush: disconnected (agent stopped: no server)"


def test_icon_states_differ() -> None:
    images = {
        "connected": icon.draw("connected", 0, connected=True),
        "disconnected": icon.draw("disconnected", 0, connected=False),
        "unread3": icon.draw("unread", 3),
        "unread42": icon.draw("unread", 42),
    }
    data = {k: v.tobytes() for k, v in images.items()}
    assert len(set(data.values())) == 4
    assert all(v.size == (64, 64) and v.mode == "RGBA" for v in images.values())
    assert images["unread3"].getpixel((60, 17))[:3] == (220, 30, 30)  # the red badge


@pytest.mark.desktop
def test_tray_icon_under_xvfb(
    desktop: Desktop, mosquitto: Mosquitto, home: Path, tmp_path: Path
) -> None:
    state = "connected"  # the tray runs agent.service in-process, subscribed to the broker
    (home / "config.toml").write_text(
        f'servers = ["{mosquitto.url}"]\ntopics = ["tray/#"]\nnotifier = "log"\n'
    )
    desktop.start_tray_host()
    with (tmp_path / "tray.log").open("wb") as log:
        tray = spawn(
            "agent", ["tray"], env={**child_env(home), **desktop.env},
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    try:
        # Exactly one icon window once docking settles (for an instant while pystray docks
        # into the tray, a search can see two windows of that name; CI saw it once).
        def one_icon() -> list[str] | None:
            found = desktop.windows("^edgepush: ")
            return found if len(found) == 1 else None

        (win,) = wait_for(one_icon, timeout=30, what="exactly one tray icon window")
        wait_for(
            lambda: desktop.xdotool("getwindowname", win) == f"edgepush: {state}",
            timeout=30,
            what=f"icon {state}",
        )
        before = desktop.screenshot(tmp_path / "icon-0.png", window=win).read_bytes()
        with Store(home / "data" / "pushagent.db").open() as store:
            store.insert_batch([msg(title=f"m{i}") for i in range(3)])
        wait_for(
            lambda: desktop.xdotool("getwindowname", win) == f"edgepush: {state}, 3 unread",
            timeout=20,
            what="unread count in the title",
        )
        after = desktop.screenshot(tmp_path / "icon-3.png", window=win).read_bytes()
        assert after != before  # the count is drawn on the icon
        desktop.screenshot(tmp_path / "tray.png")
        # pystray's X11 backend has no popup menu: a click runs the default entry
        desktop.xdotool("mousemove", "--window", win, "10", "10", "click", "1")
        wait_for(lambda: desktop.windows("^edgepush history$"), timeout=30, what="history")
        desktop.screenshot(tmp_path / "history.png")
        r = subprocess.run(
            [*_agent(), "read", "--all"], env=child_env(home), capture_output=True, check=True
        )
        assert b"marked 3 messages read" in r.stdout
        wait_for(
            lambda: desktop.xdotool("getwindowname", win) == f"edgepush: {state}",
            timeout=20,
            what="unread count back to 0",
        )
    finally:
        tray.send_signal(signal.SIGTERM)
        try:
            assert tray.wait(20) == 0
        finally:
            if tray.poll() is None:
                tray.kill()
                tray.wait()
    assert not desktop.windows("^edgepush history$")  # closed with the tray


def _agent() -> list[str]:
    import sys

    return [sys.executable, "-m", "agent"]


@pytest.mark.desktop
def test_real_menu_and_actions(desktop: Desktop, home: Path) -> None:
    """The pystray menu TrayApp builds, and its Pause / Resume / Mark all read / open entries."""
    with Store(home / "data" / "pushagent.db").open() as store:
        first, _ = store.insert_batch([msg(title="first"), msg(title="second")])
    r = subprocess.run(
        [sys.executable, "-m", "tests.tray_probe", "pause-1h", "resume", f"open:{first.message.id}",
         "read-all"],
        env={**child_env(home), **desktop.env}, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    menus = [json.loads(line) for line in r.stdout.splitlines()]
    labels = [[e["label"] for e in m] for m in menus]
    enabled = [{e["label"]: e["enabled"] for e in m} for m in menus]
    start = labels[0]
    assert start[0] == "edgepush: disconnected, 2 unread"
    assert start[1:3] == ["● home: second", "● home: first"]
    assert [e for e in start if not e.startswith("- -")][3:] == [
        "Pause for 1 hour", "Pause until tomorrow", "Resume", "Mark all read", "Open history",
        "Quit",
    ]  # fmt: skip
    assert [e["label"] for e in menus[0] if e["default"]] == ["Open history"]
    assert not enabled[0]["Resume"]
    assert labels[1][0] == "edgepush: disconnected, 2 unread, paused" and enabled[1]["Resume"]
    assert labels[2][0] == "edgepush: disconnected, 2 unread" and not enabled[2]["Resume"]
    assert labels[3][0] == "edgepush: disconnected, 1 unread" and "home: first" in labels[3]
    assert labels[4][0] == "edgepush: disconnected" and not enabled[4]["Mark all read"]
    with Store(home / "data" / "pushagent.db").open() as store:
        assert {s.state for s in store.query()} == {"read"}
        assert len(store.outbox_peek(10, kind="receipt")) == 2
