"""What both PyInstaller spec files share: the analysis, the exclusions, the one-file EXE.

Imported by ``pushagent.spec`` and ``edge-relay.spec`` (PyInstaller runs a spec as Python with
``SPECPATH`` set). ``packaging/build.py`` passes the build record to bundle in the environment
variable ``EDGEPUSH_BUILD_INFO`` (a JSON file, see ``agent/buildinfo.py``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BUILD_FILE = "edgepush-build.json"  # agent.buildinfo.BUILD_FILE

# Never needed at run time by either program: test and build tooling, and stdlib parts a
# headless push daemon does not use. Every megabyte left out is also startup time, because a
# one-file binary unpacks its whole archive on every start.
EXCLUDE_ALWAYS = [
    "tests",
    "pytest",
    "_pytest",
    "hypothesis",
    "trustme",
    "mypy",
    "ruff",
    "setuptools",
    "pip",
    "pkg_resources",
    "distutils",
    "lib2to3",
    "pydoc_data",
    "idlelib",
    "turtle",
    "turtledemo",
    "ensurepip",
    "venv",
    "doctest",
    "xmlrpc",
    "curses",
    "numpy",
    "IPython",
]
# The agent's desktop side: the relay never shows notifications or a tray.
# gi (PyGObject, the tray's AppIndicator menu) is in any venv that runs the tray tests: its
# hooks alone added GTK and 5,622 Adwaita icon files to the relay, 8 s to every start.
DESKTOP_ONLY = ["desktop_notifier", "plyer", "pystray", "PIL", "tkinter", "_tkinter", "Xlib",
                "gi", "dbus_fast"]  # fmt: skip
# What PyInstaller's gi hooks collect for the agent's tray: the hicolor icon theme only (GTK 3
# has its fallback icons built in; the tray's icon and menu are ours). All themes were 5,622
# Adwaita files that a one-file binary unpacks on every start (pushagent --version: 8.8 s
# with them, 1.4 s without; edge-relay 8.4 -> 0.4 s, 63 -> 17 MB).
GI_HOOKS = {"icons": ["hicolor"], "themes": []}
# The relay's server side: the agent is a client only.
RELAY_ONLY = [
    "aiohttp",
    "prometheus_client",
    "aiohappyeyeballs",
    "aiosignal",
    "multidict",
    "yarl",
    "frozenlist",
    "propcache",
]


def bundled_record(analysis: Any, workpath: str) -> tuple[str, str, str]:
    """The build record, narrowed to the distributions this binary bundles, as a DATA entry.

    It lands at the archive's top level (``sys._MEIPASS``), where ``agent.buildinfo`` reads it.
    """
    source = os.environ.get("EDGEPUSH_BUILD_INFO")
    if not source:
        raise SystemExit("EDGEPUSH_BUILD_INFO is not set: build with packaging/build.py")
    info = json.loads(Path(source).read_text("utf-8"))
    bundled = {entry[0].split(".")[0] for entry in analysis.pure}
    bundled |= {Path(entry[0]).parts[0].split(".")[0] for entry in analysis.binaries}
    modules = info.pop("modules")
    info["dependencies"] = {
        dist: version
        for dist, version in info["dependencies"].items()
        if bundled & set(modules.get(dist.lower().replace("_", "-"), []))
    }
    out = Path(workpath) / BUILD_FILE
    out.write_text(json.dumps(info, indent=1) + "\n", "utf-8")
    return (BUILD_FILE, str(out), "DATA")


def one_file(
    analysis_cls: Any,
    pyz_cls: Any,
    exe_cls: Any,
    *,
    name: str,
    script: str,
    workpath: str,
    packages: list[str],
    excludes: list[str],
    hiddenimports: list[str],
    data_packages: tuple[str, ...] = (),
    hooksconfig: dict[str, Any] | None = None,
) -> Any:
    """The Analysis → PYZ → EXE chain of a one-file, console, stripped executable."""
    from PyInstaller.utils.hooks import collect_data_files, collect_submodules

    hidden = list(hiddenimports)
    # Commands and backends are imported by name (importlib), which PyInstaller cannot see.
    for package in packages:
        hidden += collect_submodules(package, filter=lambda m: ".tests" not in m)
    # Package data read through importlib.resources (PyInstaller sees no import for it).
    datas = [entry for package in data_packages for entry in collect_data_files(package)]
    a = analysis_cls(
        [str(ROOT / script)],
        pathex=[str(ROOT)],
        datas=datas,
        hiddenimports=hidden,
        excludes=EXCLUDE_ALWAYS + excludes,
        noarchive=False,
        optimize=1,
        hooksconfig=hooksconfig or {},
    )
    a.datas.append(bundled_record(a, workpath))
    pyz = pyz_cls(a.pure)
    return exe_cls(
        pyz,
        a.scripts,
        a.binaries,
        a.datas,
        [],
        name=name,
        debug=False,
        strip=os.name == "posix" and os.uname().sysname == "Linux",
        upx=False,
        console=True,
        runtime_tmpdir=None,
    )
