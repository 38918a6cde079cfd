"""Start the agent with the user's session: what to write where, per platform.

* Linux, headless: a systemd **user** unit ``pushagent.service`` (``pushagent run``), enabled
  by the ``default.target.wants`` link ``systemctl --user enable`` would make.
* Linux, tray: an XDG autostart entry ``pushagent.desktop`` (``pushagent tray``).
* macOS: a LaunchAgent ``dev.edgepush.pushagent.plist`` (RunAtLoad; KeepAlive when headless).
* Windows: the ``HKCU\\...\\CurrentVersion\\Run`` value ``edgepush``.

Linux is tested here; the macOS and Windows code is written from their documentation and is
untested here. File contents are built by pure functions; ``enable``/``disable``/``status``
do the writing.
"""

from __future__ import annotations

import plistlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import agent

UNIT = "pushagent.service"
DESKTOP = "pushagent.desktop"
LAUNCH_LABEL = "dev.edgepush.pushagent"
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
RUN_VALUE = "edgepush"


@dataclass(frozen=True)
class Target:
    """Where autostart lives on this machine (``home``/``config_home`` given for tests)."""

    platform: str
    home: Path
    config_home: Path

    @property
    def unit(self) -> Path:
        return self.config_home / "systemd" / "user" / UNIT

    @property
    def wants_link(self) -> Path:
        return self.config_home / "systemd" / "user" / "default.target.wants" / UNIT

    @property
    def desktop(self) -> Path:
        return self.config_home / "autostart" / DESKTOP

    @property
    def plist(self) -> Path:
        return self.home / "Library" / "LaunchAgents" / f"{LAUNCH_LABEL}.plist"


def self_argv() -> list[str]:
    """How to start this ``pushagent`` again: the binary itself when frozen (PyInstaller),
    else this Python with ``-m agent``."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "agent"]


def command(mode: str, config: Path | None = None) -> list[str]:
    """The argv autostart runs: this pushagent, ``run`` or ``tray``."""
    argv = [*self_argv(), "run" if mode == "headless" else "tray"]
    if config is not None:
        argv += ["--config", str(config.resolve())]
    return argv


def _source_root() -> Path | None:
    """The checkout to put on PYTHONPATH when the agent is not installed as a package."""
    if getattr(sys, "frozen", False):
        return None
    root = Path(agent.__file__).resolve().parent.parent
    return None if "-packages" in root.as_posix() else root


def _quote(arg: str) -> str:
    """Quote for systemd ExecStart and desktop-entry Exec (both take C-style double quotes)."""
    if arg and all(c.isalnum() or c in "/-_.,:=@+" for c in arg):
        return arg
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$").replace("%", "%%")
    return f'"{escaped}"'


def _environment(env: Mapping[str, str]) -> dict[str, str]:
    """What the started agent must have in its environment: ``env`` (PUSHAGENT_HOME and
    PUSHAGENT_CONFIG when set, from ``config.location_env``) and PYTHONPATH for a checkout."""
    out = dict(env)
    root = _source_root()
    if root is not None:
        out["PYTHONPATH"] = str(root)
    return out


def systemd_unit(argv: list[str], env: Mapping[str, str] | None = None) -> str:
    """A systemd user unit running ``argv`` with ``env``, restarted on failure."""
    assignments = [_quote(f"{k}={v}") for k, v in _environment(env or {}).items()]
    env_lines = f"Environment={' '.join(assignments)}\n" if assignments else ""
    return (
        "[Unit]\n"
        "Description=edgepush push agent (pushagent run)\n"
        "Documentation=https://github.com/edgepush/edgepush\n\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={' '.join(_quote(a) for a in argv)}\n"
        f"{env_lines}"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        "RestartPreventExitStatus=2\n\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def desktop_entry(argv: list[str], env: Mapping[str, str] | None = None) -> str:
    """An XDG autostart entry (Desktop Entry Specification 1.5) running ``argv`` with ``env``
    (the spec has no environment key: ``env(1)`` sets it)."""
    exec_line = " ".join(_quote(a) for a in argv)
    assignments = [_quote(f"{k}={v}") for k, v in _environment(env or {}).items()]
    if assignments:
        exec_line = f"env {' '.join(assignments)} {exec_line}"
    return (
        "[Desktop Entry]\n"
        "Type=Application\n"
        "Version=1.5\n"
        "Name=edgepush\n"
        "Comment=Push notifications tray (pushagent tray)\n"
        f"Exec={exec_line}\n"
        "Terminal=false\n"
        "X-GNOME-Autostart-enabled=true\n"
    )


def launch_agent(
    argv: list[str], *, keep_alive: bool, env: Mapping[str, str] | None = None
) -> bytes:
    """A macOS LaunchAgent plist (untested here)."""
    body: dict[str, object] = {
        "Label": LAUNCH_LABEL,
        "ProgramArguments": argv,
        "RunAtLoad": True,
        "KeepAlive": keep_alive,
        "ProcessType": "Interactive",
    }
    environment = _environment(env or {})
    if environment:
        body["EnvironmentVariables"] = environment
    return plistlib.dumps(body)


def windows_command(argv: list[str]) -> str:
    """The Run-key command line (untested here). ``pythonw`` so no console window opens."""
    exe = argv[0]
    if exe.lower().endswith("python.exe"):
        exe = exe[: -len("python.exe")] + "pythonw.exe"
    return " ".join(f'"{a}"' if " " in a else a for a in [exe, *argv[1:]])


def enable(
    target: Target, mode: str, config: Path | None = None, env: Mapping[str, str] | None = None
) -> list[str]:
    """Write the autostart entry for ``mode`` (headless or tray) that runs with ``env``;
    returns what was written. (The Windows Run key cannot carry an environment.)"""
    argv = command(mode, config)
    if target.platform == "darwin":
        _write(target.plist, launch_agent(argv, keep_alive=mode == "headless", env=env))
        return [str(target.plist)]
    if target.platform == "win32":
        _set_run_key(windows_command(argv))
        return [f"HKCU\\{RUN_KEY}\\{RUN_VALUE}"]
    if mode == "tray":
        _write(target.desktop, desktop_entry(argv, env).encode())
        return [str(target.desktop)]
    _write(target.unit, systemd_unit(argv, env).encode())
    target.wants_link.parent.mkdir(parents=True, exist_ok=True)
    target.wants_link.unlink(missing_ok=True)
    target.wants_link.symlink_to(Path("..") / UNIT)
    return [str(target.unit), str(target.wants_link)]


def disable(target: Target) -> list[str]:
    """Remove every autostart entry this module writes; returns what was removed."""
    removed = []
    if target.platform == "win32":
        if _delete_run_key():
            removed.append(f"HKCU\\{RUN_KEY}\\{RUN_VALUE}")
        return removed
    for path in (target.wants_link, target.unit, target.desktop, target.plist):
        if path.is_symlink() or path.exists():
            path.unlink()
            removed.append(str(path))
    return removed


def status(target: Target) -> dict[str, bool]:
    """Which autostart entries exist."""
    if target.platform == "win32":
        return {"run-key": _get_run_key() is not None}
    if target.platform == "darwin":
        return {"launch-agent": target.plist.exists()}
    return {
        "systemd-unit": target.unit.exists() and target.wants_link.is_symlink(),
        "xdg-autostart": target.desktop.exists(),
    }


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


# Windows only, written from the winreg documentation; untested here.
if sys.platform == "win32":  # pragma: no cover
    import winreg

    def _set_run_key(value: str) -> None:
        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY, 0, winreg.KEY_SET_VALUE) as key:
            winreg.SetValueEx(key, RUN_VALUE, 0, winreg.REG_SZ, value)

    def _get_run_key() -> str | None:
        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY) as key:
                return str(winreg.QueryValueEx(key, RUN_VALUE)[0])
        except OSError:
            return None

    def _delete_run_key() -> bool:
        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY, 0, winreg.KEY_SET_VALUE) as k:
                winreg.DeleteValue(k, RUN_VALUE)
            return True
        except OSError:
            return False

else:

    def _set_run_key(value: str) -> None:
        raise OSError("the Run registry key exists only on Windows")

    def _get_run_key() -> str | None:
        return None

    def _delete_run_key() -> bool:
        return False
