#!/usr/bin/env python3
"""Build the one-file executables ``dist/pushagent`` and ``dist/edge-relay``, and the .deb.

    python packaging/build.py                 # both binaries, for this machine
    python packaging/build.py --deb           # ... and dist/edgepush_<version>_<arch>.deb
    python packaging/build.py --deb --no-build   # wrap binaries already in --dist

PyInstaller builds each binary from its spec file in this folder (``pushagent.spec``,
``edge-relay.spec``); the two builds run side by side. Each binary carries a build record
(Python, platform, PyInstaller, commit, dependency versions), printed by
``--version --verbose``. Every result is checked by running ``--version`` on it.
Linux x86_64 and aarch64 are built and tested here; Windows and macOS use the same specs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from agent import __version__, buildinfo  # noqa: E402

PROGRAMS = ("pushagent", "edge-relay")
EXE = ".exe" if os.name == "nt" else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="output folder")
    parser.add_argument(
        "--work", type=Path, default=ROOT / "build", help="PyInstaller's work folder"
    )
    parser.add_argument("--only", choices=PROGRAMS, action="append", help="build only this")
    parser.add_argument("--deb", action="store_true", help="also wrap a Debian package")
    parser.add_argument("--no-build", action="store_true", help="use binaries already built")
    args = parser.parse_args(argv)
    programs = tuple(args.only or PROGRAMS)
    args.dist.mkdir(parents=True, exist_ok=True)
    if not args.no_build:
        with ThreadPoolExecutor(len(programs)) as pool:
            jobs = [pool.submit(build, p, args.dist, args.work) for p in programs]
            for job in jobs:
                job.result()
    for name in programs:
        print(check(args.dist / (name + EXE)))
    if args.deb:
        from deb import build_deb  # packaging/deb.py, next to this file

        print(f"built {build_deb(args.dist)}")
    return 0


def record() -> dict[str, object]:
    """What ``--version --verbose`` will print: this interpreter's versions.

    ``modules`` maps each distribution to its top-level modules; the spec keeps only the
    distributions whose modules PyInstaller actually bundled, then drops the map.
    """
    from importlib import metadata

    import PyInstaller

    info = buildinfo.current()
    owners = metadata.packages_distributions()
    wanted = {_norm(d) for d in info["dependencies"]}
    modules: dict[str, list[str]] = {}
    for module, dists in owners.items():
        for dist in dists:
            if _norm(dist) in wanted:
                modules.setdefault(_norm(dist), []).append(module)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(_build_time()))
    info["build"] = f"PyInstaller {PyInstaller.__version__}, {stamp}, commit {_commit()}"
    info["modules"] = modules
    return info


def build(program: str, dist: Path, work: Path) -> Path:
    """Run PyInstaller on ``packaging/<program>.spec``; the one-file binary lands in ``dist``."""
    work = work / program
    work.mkdir(parents=True, exist_ok=True)
    info_file = work / buildinfo.BUILD_FILE
    info_file.write_text(json.dumps(record(), indent=1) + "\n", "utf-8")
    started = time.monotonic()
    cmd = [
        sys.executable,
        "-m",
        "PyInstaller",
        "--noconfirm",
        "--log-level=WARN",
        f"--distpath={dist}",
        f"--workpath={work}",
        str(HERE / f"{program}.spec"),
    ]
    env = {
        **os.environ,
        "EDGEPUSH_BUILD_INFO": str(info_file),
        # One cache per program: two PyInstallers writing one shared binary cache at once
        # corrupt its index (seen here: "bincache may be corrupted").
        "PYINSTALLER_CONFIG_DIR": str(work / "cache"),
    }
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"build.py: PyInstaller failed for {program} (exit {proc.returncode})")
    out = dist / (program + EXE)
    size = out.stat().st_size / 1e6
    print(f"built {out} ({size:.1f} MB) in {time.monotonic() - started:.0f} s", flush=True)
    return out


def check(binary: Path) -> str:
    """Run ``binary --version`` in a bare environment; its first line must name our version."""
    with tempfile.TemporaryDirectory() as home:
        env = {"PATH": os.defpath, "HOME": home, "LANG": "C.UTF-8"}
        proc = subprocess.run(
            [str(binary), "--version"], env=env, capture_output=True, text=True, check=False
        )
    expected = f"{binary.name.removesuffix(EXE)} {__version__}"
    if proc.returncode != 0 or proc.stdout.strip() != expected:
        raise SystemExit(
            f"build.py: {binary} --version printed {proc.stdout.strip()!r} "
            f"(exit {proc.returncode}), expected {expected!r}\n{proc.stderr}"
        )
    return f"ok: {proc.stdout.strip()} ({platform.machine()}, {binary.stat().st_size / 1e6:.1f} MB)"


def _norm(dist: str) -> str:
    return dist.lower().replace("_", "-")  # PEP 503 names: prometheus_client == prometheus-client


def _commit() -> str:
    if not shutil.which("git"):
        return "unknown"
    proc = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty", "--abbrev=12"],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() or "unknown"


def _build_time() -> int:
    # Reproducible builds: honour SOURCE_DATE_EPOCH (reproducible-builds.org) when set.
    return int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))


if __name__ == "__main__":
    raise SystemExit(main())
