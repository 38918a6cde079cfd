"""What ``--version`` and ``--version --verbose`` print, for both programs.

A binary built by ``packaging/build.py`` carries a ``edgepush-build.json`` (Python version,
platform, PyInstaller version, commit, and the version of every bundled distribution),
recorded at build time, because a frozen program cannot ask ``importlib.metadata``: the
distributions' metadata is not bundled. Run from source, the same report is read from the
installed distributions instead, and says so.

``--version`` is answered before the command-line parser is built, so it imports none of the
commands (a frozen binary answers it in well under a second).
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent import __version__

BUILD_FILE = "edgepush-build.json"
# The distributions worth naming in a bug report: the chosen dependencies (DESIGN.md) and
# the few they pull in that change behaviour on the wire or on disk.
DISTRIBUTIONS = (
    "paho-mqtt",
    "websockets",
    "aiohttp",
    "sqlite-utils",
    "platformdirs",
    "keyring",
    "zeroconf",
    "prometheus-client",
    "desktop-notifier",
    "plyer",
    "pystray",
    "pillow",
)


def version_request(argv: Sequence[str]) -> int | None:
    """``None`` unless ``--version`` is among ``argv``; else how verbose (``-v`` counts).

    Only the options before ``--`` count, so a message text ``--version`` after ``--`` is
    left alone.
    """
    args = list(argv)
    if "--" in args:
        args = args[: args.index("--")]
    if "--version" not in args:
        return None
    verbose = 0
    for a in args:
        if a == "--verbose":
            verbose += 1
        elif a.startswith("-") and not a.startswith("--") and set(a[1:]) == {"v"}:
            verbose += len(a) - 1
    return verbose


def describe(prog: str, *, verbose: int = 0) -> str:
    """One line ``PROG VERSION``; with ``verbose``, the build's Python and dependencies."""
    head = f"{prog} {__version__}"
    if not verbose:
        return head + "\n"
    info = recorded() or current()
    lines = [
        head,
        f"python: {info['python']} ({info['implementation']})",
        f"platform: {info['platform']}",
        f"build: {info['build']}",
        "dependencies:",
    ]
    deps: dict[str, str] = info["dependencies"]
    width = max((len(n) for n in deps), default=0)
    lines += [f"  {name:{width}}  {ver}" for name, ver in sorted(deps.items())]
    return "\n".join(lines) + "\n"


def recorded() -> dict[str, Any] | None:
    """The build record bundled into a frozen binary, or None when running from source."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle is None:
        return None
    try:
        data: dict[str, Any] = json.loads((Path(bundle) / BUILD_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data


def current(names: Sequence[str] = DISTRIBUTIONS) -> dict[str, Any]:
    """The same report for the running interpreter (what ``build.py`` records)."""
    from importlib import metadata  # only here: plain --version should not pay for it

    deps: dict[str, str] = {}
    for name in names:
        try:
            deps[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # an extra that is not installed, e.g. [relay] on a desktop
    return {
        "version": __version__,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": f"{sys.platform}-{platform.machine()}",
        "build": "from source (not a frozen binary)",
        "dependencies": deps,
    }
