"""``pushagent autostart`` on Linux, with HOME and XDG_CONFIG_HOME in the test's tmp dir.

macOS and Windows: the plist is checked as data here (plistlib round trip); installing it,
and the Windows Run key, are untested here (no such machine).
"""

from __future__ import annotations

import configparser
import os
import plistlib
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from agent import autostart
from tests.helpers import ROOT, pushagent


def _env(tmp_path: Path) -> dict[str, str]:
    return {"HOME": str(tmp_path / "userhome"), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}


def test_systemd_unit_enable_status_disable(home: Path, tmp_path: Path) -> None:
    env = _env(tmp_path)
    r = pushagent("autostart", "status", home=home, env=env)
    assert r.returncode == 3 and b"systemd-unit: disabled" in r.stdout
    r = pushagent("autostart", "enable", home=home, env=env)
    assert r.returncode == 0, r.stderr
    unit = tmp_path / "xdg" / "systemd" / "user" / "pushagent.service"
    link = tmp_path / "xdg" / "systemd" / "user" / "default.target.wants" / "pushagent.service"
    assert link.is_symlink() and link.resolve() == unit.resolve()
    parsed = configparser.ConfigParser(interpolation=None)
    parsed.read_string(unit.read_text())
    assert parsed["Service"]["ExecStart"] == f"{sys.executable} -m agent run"
    assert parsed["Service"]["Restart"] == "on-failure"
    assert parsed["Install"]["WantedBy"] == "default.target"
    # run from this checkout, with the PUSHAGENT_HOME it was enabled with (pushagent() sets it)
    assert shlex.split(parsed["Service"]["Environment"]) == [
        f"PUSHAGENT_HOME={home}", f"PYTHONPATH={ROOT}"
    ]  # fmt: skip
    r = pushagent("autostart", "status", home=home, env=env)
    assert r.returncode == 0 and b"systemd-unit: enabled" in r.stdout
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is part of the test dependencies (packaging/dev.sh)"
    v = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
    )  # fmt: skip
    assert v.returncode == 0, v.stderr
    r = pushagent("autostart", "disable", home=home, env=env)
    assert r.returncode == 0 and not unit.exists() and not link.is_symlink()
    assert pushagent("autostart", "status", home=home, env=env).returncode == 3


def test_xdg_autostart_for_the_tray(home: Path, tmp_path: Path) -> None:
    env = _env(tmp_path)
    r = pushagent("autostart", "enable", "--tray", home=home, env=env)
    assert r.returncode == 0, r.stderr
    entry = tmp_path / "xdg" / "autostart" / "pushagent.desktop"
    parsed = configparser.ConfigParser(interpolation=None)
    parsed.optionxform = str  # type: ignore[assignment,method-assign]
    parsed.read_string(entry.read_text())
    section = parsed["Desktop Entry"]
    assert section["Type"] == "Application"
    assert section["Exec"].endswith(f"{sys.executable} -m agent tray")
    # The entry keeps PUSHAGENT_HOME: run its Exec line (with `config path` for `tray`) in an
    # environment without it, and it still finds this home's config.
    argv = shlex.split(section["Exec"])
    assert argv[:3] == ["env", f"PUSHAGENT_HOME={home}", f"PYTHONPATH={ROOT}"], argv
    bare = {k: v for k, v in os.environ.items() if not k.startswith("PUSHAGENT_")}
    bare.pop("PYTHONPATH", None)
    r = subprocess.run(
        [*argv[:-1], "config", "path"], env=bare, capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0, r.stderr
    assert str(home / "config.toml") in r.stdout
    r = pushagent("autostart", "status", home=home, env=env)
    assert b"xdg-autostart: enabled" in r.stdout
    assert pushagent("autostart", "disable", home=home, env=env).returncode == 0
    assert not entry.exists()


def test_launch_agent_plist_is_valid(tmp_path: Path) -> None:
    # Written for macOS, checked as data only: untested on a Mac here.
    data = plistlib.loads(autostart.launch_agent(["/usr/bin/python3", "-m", "agent", "run"],
                                                 keep_alive=True))  # fmt: skip
    assert data["Label"] == "dev.edgepush.pushagent"
    assert data["ProgramArguments"] == ["/usr/bin/python3", "-m", "agent", "run"]
    assert data["RunAtLoad"] is True and data["KeepAlive"] is True
    target = autostart.Target("darwin", tmp_path, tmp_path / "cfg")
    autostart.enable(target, "tray")
    assert plistlib.loads(target.plist.read_bytes())["KeepAlive"] is False
    assert autostart.status(target) == {"launch-agent": True}
    assert autostart.disable(target) == [str(target.plist)]


def test_quoting_of_odd_paths() -> None:
    unit = autostart.systemd_unit(["/opt/my env/python", "-m", "agent", "run", "--config",
                                   "/home/a b/100%.toml"])  # fmt: skip
    assert 'ExecStart="/opt/my env/python" -m agent run --config "/home/a b/100%%.toml"' in unit
    assert autostart.windows_command([r"C:\Program Files\Python\python.exe", "-m", "agent"]) == (
        r'"C:\Program Files\Python\pythonw.exe" -m agent'
    )


def test_install_doc_autostart_line_starts_the_tray(home: Path, tmp_path: Path) -> None:
    """docs/INSTALL.md's "start the tray with your session" line, run as written."""
    doc = (ROOT / "docs" / "INSTALL.md").read_text().splitlines()
    (line,) = [ln for ln in doc if ln.startswith("pushagent autostart enable") and "tray" in ln]
    r = pushagent(*shlex.split(line, comments=True)[1:], home=home, env=_env(tmp_path))
    assert r.returncode == 0, r.stderr
    entry = tmp_path / "xdg" / "autostart" / "pushagent.desktop"
    (exec_line,) = [ln for ln in entry.read_text().splitlines() if ln.startswith("Exec=")]
    assert exec_line.endswith(f"{sys.executable} -m agent tray")
