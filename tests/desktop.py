"""A real desktop session for tests: Xvfb, a private D-Bus session bus, and dunst.

Everything lives in the test's tmp dir; the display number is picked by Xvfb itself
(``-displayfd``), the bus has no service directories (so nothing is auto-started behind the
test's back), and dunst runs with its own config: notifications stay on screen until closed
(timeout 0, no idle threshold) and the history keeps 1000 entries.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from tests.helpers import wait_for

DUNSTRC = """\
[global]
    monitor = 0
    follow = none
    history_length = 1000
    idle_threshold = 0
    show_age_threshold = -1
    markup = full
    format = "%s\\n%b"
    sticky_history = yes
    notification_limit = 0
    dmenu = {dmenu}
[record]
    summary = "*"
    script = {script}
[urgency_low]
    timeout = 0
[urgency_normal]
    timeout = 0
[urgency_critical]
    timeout = 0
"""

BUS_CONFIG = """\
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir={dir}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


class Desktop:
    """Xvfb + dbus-daemon + dunst. ``env`` is what a child needs to talk to them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env: dict[str, str] = {}
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[Any] = []
        self._trayer: subprocess.Popen[bytes] | None = None
        self.tray_height = 0

    def start(self, *, dunst: bool = True) -> Desktop:
        self.root.mkdir(parents=True, exist_ok=True)
        display = self._xvfb()
        address = self._bus()
        self.env = {"DISPLAY": f":{display}", "DBUS_SESSION_BUS_ADDRESS": address}
        if dunst:
            self.start_dunst()
        return self

    def _spawn(self, argv: list[str], name: str, **kw: Any) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name}.log").open("wb")
        self._logs.append(log)
        kw.setdefault("stdout", log)
        proc = subprocess.Popen(argv, stderr=log, **kw)
        self._procs.append(proc)
        return proc

    def spawn(self, argv: list[str], name: str) -> subprocess.Popen[bytes]:
        """A program of the session (on its display and bus), logged to ``name``.log and
        ended with the desktop."""
        return self._spawn(argv, name, env={**os.environ, **self.env})

    def _xvfb(self) -> int:
        r, w = os.pipe()
        try:
            self._spawn(
                ["Xvfb", "-displayfd", str(w), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                "xvfb",
                pass_fds=(w,),
            )
            os.close(w)
            w = -1
            data = b""
            with os.fdopen(r, "rb") as f:
                r = -1
                while not data.endswith(b"\n"):
                    chunk = f.read(1)
                    if not chunk:
                        raise AssertionError(f"Xvfb exited: {self.log('xvfb')}")
                    data += chunk
            return int(data)
        finally:
            for fd in (r, w):
                if fd >= 0:
                    os.close(fd)

    def _bus(self) -> str:
        bus_dir = self.root / "bus"
        bus_dir.mkdir(exist_ok=True)
        conf = self.root / "bus.conf"
        conf.write_text(BUS_CONFIG.format(dir=bus_dir))
        proc = self._spawn(
            ["dbus-daemon", f"--config-file={conf}", "--nofork", "--print-address"],
            "dbus",
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().strip()
        proc.stdout.close()
        if not line:
            raise AssertionError(f"dbus-daemon did not start: {self.log('dbus')}")
        return line

    def start_dunst(self) -> None:
        rc = self.root / "dunstrc"
        script = self.root / "record.sh"
        # dunst runs this for every notification it shows: its view of id and urgency.
        script.write_text(
            f'#!/bin/sh\nprintf "%s\\t%s\\n" "$DUNST_ID" "$DUNST_URGENCY" >> "{self.shown_file}"\n'
            f'printf "%s\\t%s\\n" "$DUNST_SUMMARY" "$DUNST_ICON_PATH" >> "{self.icons_file}"\n'
        )
        script.chmod(0o755)
        # dunst's context menu (`dunstctl context`) asks "dmenu" to pick an action: this one
        # picks the line with the label press() left in the choice file.
        dmenu = self.root / "dmenu.sh"
        # (and appends what it was offered to dmenu-offered, for offered())
        dmenu.write_text(
            f'#!/bin/sh\nmenu=$(cat)\nprintf "%s\\n" "$menu" >> "{self.root}/dmenu-offered"\n'
            f'printf "%s\\n" "$menu" | grep -m1 -F -- "$(cat "{self.root}/dmenu-choice")"\n'
        )
        dmenu.chmod(0o755)
        rc.write_text(DUNSTRC.format(script=script, dmenu=dmenu))
        self._spawn(["dunst", "-config", str(rc)], "dunst", env={**os.environ, **self.env})
        wait_for(
            lambda: self.dunstctl("is-paused", check=False).returncode == 0,
            timeout=20,
            what=f"dunst on the bus ({self.log('dunst')})",
        )

    def offered(self) -> list[str]:
        """Every line dunst's context menu offered so far (the buttons, over all presses)."""
        f = self.root / "dmenu-offered"
        return f.read_text().splitlines() if f.exists() else []

    def press(self, label: str) -> None:
        """Press the action button ``label`` of the newest notification (dunst's context
        menu, answered by the dmenu stand-in above: dunst then emits ``ActionInvoked``)."""
        (self.root / "dmenu-choice").write_text(label)
        self.dunstctl("context")

    def start_tray_host(self, height: int = 48) -> None:
        """trayer, a small XEmbed system tray, so tray icons have somewhere to dock."""
        self.stop_tray_host()
        self.tray_height = height
        self._trayer = self._spawn(
            ["trayer", "--edge", "top", "--align", "right", "--widthtype", "pixel",
             "--width", "200", "--height", str(height), "--SetDockType", "true"],
            f"trayer-{height}",
            env={**os.environ, **self.env},
        )  # fmt: skip
        wait_for(lambda: self.windows("^panel$"), timeout=20, what="trayer's panel")
        # and until it owns the tray selection: its panel window comes first, and a dock
        # request in between is dropped (the icon then waits for trayer's MANAGER message)
        wait_for(self._tray_selection_owned, timeout=20, what="trayer owning the tray")

    def _tray_selection_owned(self) -> bool:
        return self._tray_owner() is not None

    def _tray_owner(self) -> str | None:
        """The id of the window owning the tray selection, if any."""
        from Xlib import X, display

        d = display.Display(self.env["DISPLAY"])
        try:
            owner = d.get_selection_owner(d.intern_atom("_NET_SYSTEM_TRAY_S0"))
            return None if owner == X.NONE else hex(owner.id)
        finally:
            d.close()

    def stop_tray_host(self) -> None:
        trayer, self._trayer = self._trayer, None
        if trayer is not None:
            trayer.terminate()
            trayer.wait(10)
            wait_for(lambda: not self.windows("^panel$"), timeout=20, what="trayer gone")

    def tray_slot(self, width: int = 24) -> tuple[int, int]:
        """The size trayer gives a docked icon: the width its size hints ask for (pystray's
        X11 icon: 24) and the panel's height less trayer's 1 px border (measured at 16, 24,
        32, 48 and 64)."""
        return width, self.tray_height - 2

    def geometry(self, window: str) -> tuple[int, int]:
        """A window's (width, height) now (xdotool getwindowgeometry)."""
        out = dict(
            line.split("=", 1)
            for line in self.xdotool("getwindowgeometry", "--shell", window).splitlines()
        )
        return int(out["WIDTH"]), int(out["HEIGHT"])

    def docked(self, window: str) -> bool:
        """Whether ``window`` has been reparented into a tray (its parent is not the root)."""
        tree = subprocess.run(
            ["xwininfo", "-tree", "-id", window],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        ).stdout
        ids = dict(re.findall(r"^\s*(Root|Parent) window id: (0x[0-9a-f]+)", tree, re.M))
        return len(ids) == 2 and ids["Root"] != ids["Parent"]

    def wait_docked(self, window: str, timeout: float = 30) -> tuple[int, int]:
        """Wait until a tray icon window is docked and has its final size (not the 1x1 it is
        created with): screenshots before that show one black pixel."""
        slot = self.tray_slot()
        try:
            wait_for(
                lambda: self.docked(window) and self.geometry(window) == slot,
                timeout=timeout,
                what=f"icon window {window} docked at {slot}",
            )
        except AssertionError as exc:
            now = f"docked={self.docked(window)}, size={self.geometry(window)}"
            raise AssertionError(f"{exc}; now {now}\n{self.describe(window)}") from None
        return slot

    def describe(self, window: str | None = None) -> str:
        """What the X server holds now, for a failure message: who owns the tray selection,
        the whole window tree, and ``window``'s properties."""
        lines = [f"_NET_SYSTEM_TRAY_S0 owner: {self._tray_owner()}"]
        commands = [["xwininfo", "-root", "-tree"]]
        if window is not None:
            commands += [["xwininfo", "-id", window], ["xprop", "-id", window]]
        for argv in commands:
            r = subprocess.run(
                argv, env={**os.environ, **self.env}, capture_output=True, text=True,
                timeout=20, check=False,
            )  # fmt: skip
            lines.append(f"$ {' '.join(argv)}\n{r.stdout}{r.stderr}")
        return "\n".join(lines)

    def windows(self, name_regex: str) -> list[str]:
        """X window ids whose name matches (xdotool search)."""
        r = subprocess.run(
            ["xdotool", "search", "--name", name_regex],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        return r.stdout.split()

    def xdotool(self, *args: str) -> str:
        return subprocess.run(
            ["xdotool", *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()

    def dunstctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["dunstctl", *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=20,
            check=check,
        )

    @property
    def shown_file(self) -> Path:
        return self.root / "shown.tsv"

    @property
    def icons_file(self) -> Path:
        return self.root / "icons.tsv"

    def icons(self) -> list[tuple[str, str]]:
        """(summary, icon path) of every notification dunst showed, replacements too, in
        order (dunst 1.9 gives a replacement's script the path it had before)."""
        if not self.icons_file.exists():
            return []
        rows = [line.split("\t") for line in self.icons_file.read_text().splitlines()]
        return [(r[0], r[1]) for r in rows if len(r) == 2]

    def urgencies(self) -> dict[int, str]:
        """dunst notification id → urgency (LOW, NORMAL, CRITICAL) as dunst saw it."""
        if not self.shown_file.exists():
            return {}
        rows = [line.split("\t") for line in self.shown_file.read_text().splitlines()]
        return {int(i): u for i, u in rows if i}

    def count(self, which: str) -> int:
        """``displayed``, ``waiting`` or ``history``."""
        return int(self.dunstctl("count", which).stdout.strip())

    def history(self) -> list[dict[str, Any]]:
        """Closed notifications, newest first, as plain dicts (summary, body, urgency, ...)."""
        data = json.loads(self.dunstctl("history").stdout)
        return [{k: v["data"] for k, v in n.items()} for n in data["data"][0]]

    def screenshot(self, path: Path, window: str = "root") -> Path:
        subprocess.run(
            ["import", "-window", window, str(path)],
            env={**os.environ, **self.env},
            check=True,
            timeout=30,
            capture_output=True,
        )
        return path

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self) -> None:
        for proc in reversed(self._procs):
            proc.terminate()
        for proc in reversed(self._procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self._logs:
            log.close()
