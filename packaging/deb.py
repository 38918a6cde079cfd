"""Wrap the built binaries, the systemd units and a default relay config into a .deb.

``build_deb(dist)`` lays out a package tree next to the binaries and runs ``dpkg-deb``:

    /usr/bin/pushagent, /usr/bin/edge-relay          the one-file binaries
    /lib/systemd/system/edge-relay.service           system service (enabled by nobody but you)
    /usr/lib/systemd/user/pushagent.service          user service for headless agents
    /usr/lib/sysusers.d/edge-relay.conf              the service user, made by systemd-sysusers
    /etc/edge-relay/config.toml                      a conffile: your edits survive upgrades

The maintainer scripts only create the service user (``DPKG_ROOT``-aware, so the package
installs into a throwaway root too) and stop the relay on removal; they enable nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = "edgepush"
MAINTAINER = "edgepush developers <edgepush@example.org>"

POSTINST = """#!/bin/sh
set -e
# Create the relay's system user (and group), and an empty token file (root-only; it
# denies everything until `edge-relay token add`). Enable nothing: that is the admin's call.
if [ "$1" = configure ]; then
    systemd-sysusers ${DPKG_ROOT:+--root="$DPKG_ROOT"} edge-relay.conf
    auth="$DPKG_ROOT/etc/edge-relay/auth.json"
    if [ ! -e "$auth" ]; then
        (umask 077 && printf '{"anonymous": {"read": [], "write": []}, "tokens": {}}\n' > "$auth")
    fi
fi
exit 0
"""
PRERM = """#!/bin/sh
set -e
# Stop a running relay before its binary goes away (no-op without systemd as init).
if [ "$1" = remove ] && [ -z "$DPKG_ROOT" ] && [ -d /run/systemd/system ]; then
    deb-systemd-invoke stop edge-relay.service >/dev/null || true
fi
exit 0
"""
POSTRM = """#!/bin/sh
set -e
# Purge removes what the relay made at run time; the service user stays (Debian policy).
if [ "$1" = purge ]; then
    rm -rf "$DPKG_ROOT/var/lib/edge-relay" "$DPKG_ROOT/etc/edge-relay/auth.json"
    rmdir --ignore-fail-on-non-empty "$DPKG_ROOT/etc/edge-relay" 2>/dev/null || true
fi
exit 0
"""
COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: edgepush

Files: *
Copyright: 2026 edgepush developers
License: MIT
 Permission is hereby granted, free of charge, to any person obtaining a copy of this
 software and associated documentation files (the "Software"), to deal in the Software
 without restriction, including without limitation the rights to use, copy, modify, merge,
 publish, distribute, sublicense, and/or sell copies of the Software, and to permit persons
 to whom the Software is furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included in all copies or
 substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED,
 INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR
 PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE
 FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR
 OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER
 DEALINGS IN THE SOFTWARE.
"""
DESCRIPTION = """\
push-notification agent and ntfy-compatible edge relay
 edgepush keeps one live connection (MQTT 5 or ntfy-style WebSocket),
 stores every message in a local SQLite cache before acknowledging it,
 and shows it as a desktop notification or hands it to a command.
 .
 pushagent is the resident agent (tray app or headless daemon).
 edge-relay is a self-hosted, ntfy-compatible push hub for the LAN,
 optionally bridged to an upstream MQTT broker; it ships as a hardened
 systemd service that is not enabled by default."""
SUMMARY = {
    "pushagent": "resident push-notification agent (MQTT / ntfy WebSocket)",
    "edge-relay": "ntfy-compatible push hub for the LAN, bridged to a broker",
}


def build_deb(dist: Path, version: str | None = None) -> Path:
    """Build ``dist/edgepush_<version>_<arch>.deb`` from the binaries in ``dist``."""
    from agent import __version__

    version = version or __version__
    arch = _arch()
    tree = dist / "deb-root"
    if tree.exists():
        shutil.rmtree(tree)
    _lay_out(tree, dist, version)
    _control(tree, version, arch)
    out = dist / f"{PACKAGE}_{version}_{arch}.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(out)],
        check=True,
        capture_output=True,
    )
    return out


def _lay_out(tree: Path, dist: Path, version: str) -> None:
    for name in ("pushagent", "edge-relay"):
        _install(dist / name, tree / "usr/bin" / name, 0o755)
        man = tree / "usr/share/man/man1" / f"{name}.1.gz"
        man.parent.mkdir(parents=True, exist_ok=True)
        _gzip(man, _manpage(tree / "usr/bin" / name, version))
    units = HERE / "systemd"
    _install(units / "edge-relay.service", tree / "lib/systemd/system/edge-relay.service")
    _install(units / "pushagent.service", tree / "usr/lib/systemd/user/pushagent.service")
    _install(units / "edge-relay.sysusers", tree / "usr/lib/sysusers.d/edge-relay.conf")
    _install(HERE / "relay-config.toml", tree / "etc/edge-relay/config.toml")
    doc = tree / "usr/share/doc" / PACKAGE
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(COPYRIGHT)
    (doc / "copyright").chmod(0o644)
    _gzip(doc / "changelog.gz", _changelog(version))
    for d in [tree, *(p for p in tree.rglob("*") if p.is_dir())]:
        d.chmod(0o755)  # whatever the umask was


def _control(tree: Path, version: str, arch: str) -> None:
    debian = tree / "DEBIAN"
    debian.mkdir(mode=0o755)
    size_kib = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file()) // 1024 + 1
    glibc = os.confstr("CS_GNU_LIBC_VERSION") or "glibc 2.31"
    control = (
        f"Package: {PACKAGE}\n"
        f"Version: {version}\n"
        f"Architecture: {arch}\n"
        f"Maintainer: {MAINTAINER}\n"
        f"Installed-Size: {size_kib}\n"
        # The binaries bundle their own Python and libraries; they need only the C library
        # they were built against, and systemd-sysusers for the relay's user.
        f"Depends: libc6 (>= {glibc.split()[-1]}), systemd | systemd-standalone-sysusers\n"
        "Section: net\n"
        "Priority: optional\n"
        f"Description: {DESCRIPTION}\n"
    )
    (debian / "control").write_text(control)
    (debian / "conffiles").write_text("/etc/edge-relay/config.toml\n")
    for name, text in (("postinst", POSTINST), ("prerm", PRERM), ("postrm", POSTRM)):
        (debian / name).write_text(text)
        (debian / name).chmod(0o755)
    sums = []
    for path in sorted(p for p in tree.rglob("*") if p.is_file() and "DEBIAN" not in p.parts):
        digest = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
        sums.append(f"{digest}  {path.relative_to(tree)}\n")
    (debian / "md5sums").write_text("".join(sums))
    for p in debian.iterdir():
        if p.name not in ("postinst", "prerm", "postrm"):
            p.chmod(0o644)


def _changelog(version: str) -> bytes:
    when = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(_epoch()))
    return (
        f"{PACKAGE} ({version}) unstable; urgency=medium\n\n"
        "  * Release built by packaging/build.py --deb.\n\n"
        f" -- {MAINTAINER}  {when}\n"
    ).encode()


def _manpage(binary: Path, version: str) -> bytes:
    """A plain man page: the program's own ``--help``, so it cannot drift from the code."""
    proc = subprocess.run(
        [str(binary), "--help"], capture_output=True, text=True, check=True, env={"COLUMNS": "78"}
    )
    body = "\n".join(_roff(line) for line in proc.stdout.splitlines())
    name = binary.name
    return (
        f'.TH {name.upper()} 1 "" "edgepush {version}" "User Commands"\n'
        f".SH NAME\n{name} \\- {SUMMARY[name]}\n"
        f".SH DESCRIPTION\n.nf\n{body}\n.fi\n"
        ".SH SEE ALSO\n/usr/share/doc/edgepush, docs/INSTALL.md in the source\n"
    ).encode()


def _roff(line: str) -> str:
    line = line.replace("\\", "\\e")  # a backslash is roff's escape character
    return "\\&" + line if line.startswith((".", "'")) else line  # not a roff request


def _install(src: Path, dst: Path, mode: int = 0o644) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    dst.chmod(mode)


def _gzip(path: Path, data: bytes) -> None:
    # Maximum compression, no name or time in the header: lintian's and reproducibility's ask.
    with (
        path.open("wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz,
    ):
        gz.write(data)
    path.chmod(0o644)


def _arch() -> str:
    proc = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    )
    return proc.stdout.strip()


def _epoch() -> int:
    return int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
