"""How ``pushagent tray`` starts, or refuses to: the desktop extra, the display, its flags.

These run the real command as a process. "No service started" is checked by what a started
service leaves behind: its database and status file under PUSHAGENT_HOME, and a TCP
connection to the server it was configured with (a bare listening socket here: the kernel
completes a client's handshake into the listen backlog even if nobody calls accept, so a
non-blocking ``accept`` after the process has exited shows whether it ever connected).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.tray import backend
from tests.desktop import Desktop
from tests.helpers import child_env, wait_for


@pytest.fixture
def server() -> Iterator[socket.socket]:
    """A listening socket standing in for the configured MQTT server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        s.setblocking(False)
        yield s


def _configure(home: Path, server: socket.socket) -> None:
    port = server.getsockname()[1]
    (home / "config.toml").write_text(
        f'servers = ["mqtt://127.0.0.1:{port}"]\ntopics = ["tray/#"]\nnotifier = "log"\n'
    )


def _tray(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "tray"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _assert_nothing_started(home: Path, server: socket.socket) -> None:
    assert sorted(p.name for p in home.iterdir()) == ["config.toml"]  # no data/, no store
    with pytest.raises(BlockingIOError):
        server.accept()  # nobody ever connected to the server


def _no_display(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}


@pytest.mark.parametrize("module", ["pystray", "PIL"])
def test_without_the_desktop_extra(
    module: str, home: Path, tmp_path: Path, server: socket.socket
) -> None:
    # A faithful stand-in for "not installed": a module of that name, first on the path, that
    # raises exactly what the import system raises for a missing one (ModuleNotFoundError
    # with .name set). The tray only sees the exception of its import statement, so it
    # cannot tell the two apart; everything else in the environment stays as it is.
    hide = tmp_path / "hide"
    (hide / module).mkdir(parents=True)
    (hide / module / "__init__.py").write_text(
        f"raise ModuleNotFoundError(\"No module named '{module}'\", name={module!r})\n"
    )
    _configure(home, server)
    env = child_env(home)
    env["PYTHONPATH"] = f"{hide}{os.pathsep}{env['PYTHONPATH']}"
    r = _tray(env)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    # run from this checkout: the extra is installed with pip into this Python, editable
    assert lines[0] == (
        "pushagent: the tray needs pystray and Pillow (the 'desktop' extra), not installed "
        f"here; install them with: {sys.executable} -m pip install -e '{backend.CHECKOUT}[desktop]'"
    )
    _assert_nothing_started(home, server)


@pytest.mark.parametrize(
    ("display", "says"),
    [
        (None, "there is no display (DISPLAY is not set)"),
        (":4093", "cannot open the display :4093"),  # set, but no X server there
    ],
)
def test_without_a_display(
    display: str | None, says: str, home: Path, server: socket.socket
) -> None:
    _configure(home, server)
    env = _no_display(child_env(home))
    if display is not None:
        env["DISPLAY"] = display
    r = _tray(env)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"pushagent: the tray needs a graphical session, and {says}")
    assert lines[0].endswith("for the agent without a tray use 'pushagent run'")
    _assert_nothing_started(home, server)


@pytest.mark.parametrize(
    ("frozen", "prefix", "checkout", "hint"),
    [
        (True, "/opt", None, "this pushagent binary was built without the tray"),
        (False, "/home/u/.local/share/pipx/venvs/edgepush", None,
         "pipx inject edgepush pystray Pillow"),
        (False, "/home/u/venv", None, "/home/u/venv/bin/python -m pip install 'edgepush[desktop]'"),
        (False, "/home/u/venv", "/src/edgepush",
         "/home/u/venv/bin/python -m pip install -e '/src/edgepush[desktop]'"),
    ],
)  # fmt: skip
def test_install_hint_per_install_method(
    frozen: bool, prefix: str, checkout: str | None, hint: str
) -> None:
    got = backend.install_hint(
        frozen=frozen,
        prefix=Path(prefix),
        executable=Path(prefix) / "bin" / "python",
        checkout=Path(checkout) if checkout else None,
    )
    assert got.startswith(hint), got


@pytest.mark.parametrize(
    ("sni_host", "appindicator", "chosen"),
    [(True, True, "appindicator"), (True, False, "xorg"), (False, True, "xorg"),
     (False, False, "xorg")],
)  # fmt: skip
def test_backend_choice(sni_host: bool, appindicator: bool, chosen: str) -> None:
    assert backend.choose(sni_host=sni_host, appindicator=appindicator) == chosen


# Owns org.kde.StatusNotifierWatcher on the session bus until its stdin closes. Only the
# name, not a real SNI host: enough for detection; a real host is not proven here.
WATCHER_NAME = """
import asyncio, sys
from dbus_fast.aio import MessageBus
async def main():
    bus = await MessageBus().connect()
    await bus.request_name("org.kde.StatusNotifierWatcher")
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main())
"""


@pytest.mark.desktop
def test_sni_host_detected_on_the_session_bus(bare_desktop: Desktop, home: Path) -> None:
    env = {**child_env(home), **bare_desktop.env}
    probe = [sys.executable, "-c", "from agent.tray import backend as b; "
             "print(b.sni_host_present())"]  # fmt: skip
    assert subprocess.run(probe, env=env, capture_output=True, text=True).stdout == "False\n"
    owner = subprocess.Popen(
        [sys.executable, "-c", WATCHER_NAME], env=env, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert owner.stdout is not None and owner.stdout.readline() == "ready\n"
        assert subprocess.run(probe, env=env, capture_output=True, text=True).stdout == "True\n"
        # no PyGObject here: the tray says what the menu needs and keeps the X11 icon
        bare_desktop.start_tray_host()
        tray = subprocess.Popen(
            [sys.executable, "-m", "agent", "tray", "--no-service"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            (win,) = wait_for(lambda: bare_desktop.windows("^edgepush: "), timeout=30)
            assert bare_desktop.wait_docked(win) == (24, 46)
        finally:
            tray.send_signal(signal.SIGTERM)
            _, err = tray.communicate(timeout=20)
        assert tray.returncode == 0
        assert err.count(backend.SNI_PACKAGES) == 1, err
    finally:
        owner.communicate("", timeout=10)
