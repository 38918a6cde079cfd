"""The shipped artefacts: PyInstaller binaries, the .deb, the systemd units, install-relay.sh.

Both binaries are built once per test session (``binaries`` fixture, ~35 s on an idle
2-core box) and everything else runs against them: only the binaries and a real mosquitto,
never this checkout's Python. The session build happens inside the first test that asks for
it, so this module allows 300 s per test instead of the suite's 120 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

from agent import __version__
from tests.desktop import Desktop
from tests.helpers import ROOT, free_port, wait_for
from tests.mosquitto import Mosquitto
from tests.sni import Bus, Item, start_host

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(300)]
PACKAGING = ROOT / "packaging"


@dataclass(frozen=True)
class Binaries:
    dist: Path

    @property
    def agent(self) -> Path:
        return self.dist / "pushagent"

    @property
    def relay(self) -> Path:
        return self.dist / "edge-relay"


@pytest.fixture(scope="session")
def binaries(tmp_path_factory: pytest.TempPathFactory) -> Binaries:
    """Both one-file binaries, built once per session by packaging/build.py."""
    dist = tmp_path_factory.mktemp("dist")
    work = tmp_path_factory.mktemp("pyinstaller")
    proc = run(
        [sys.executable, str(PACKAGING / "build.py"), "--dist", str(dist), "--work", str(work)],
        timeout=280,
    )
    assert proc.returncode == 0, f"build.py failed:\n{proc.stdout}\n{proc.stderr}"
    assert f"ok: pushagent {__version__}" in proc.stdout
    assert f"ok: edge-relay {__version__}" in proc.stdout
    return Binaries(dist)


@pytest.fixture(scope="session")
def deb(binaries: Binaries) -> Path:
    """The .deb wrapped around the session's binaries."""
    proc = run(
        [
            sys.executable,
            str(PACKAGING / "build.py"),
            "--dist",
            str(binaries.dist),
            "--no-build",
            "--deb",
        ],
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    path = binaries.dist / f"edgepush_{__version__}_{arch}.deb"
    assert path.is_file(), proc.stdout
    return path


@pytest.fixture(scope="session")
def installed(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway root with the .deb installed by dpkg (maintainer scripts run too)."""
    root = tmp_path_factory.mktemp("dpkg-root")
    admin = root / "var/lib/dpkg"
    for d in ("info", "updates"):
        (admin / d).mkdir(parents=True)
    (admin / "status").touch()
    (admin / "available").touch()
    # --force-script-chrootless: the scripts run here with DPKG_ROOT set (there is no shell
    # inside the empty root to chroot into); --force-depends: the root has no libc6/systemd.
    proc = run(
        [
            "dpkg",
            f"--root={root}",
            "--force-script-chrootless",
            "--force-depends",
            f"--log={root / 'dpkg.log'}",
            "--install",
            str(deb),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    return root


def run(cmd: list[str], *, timeout: float = 60, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw
    )


def bare_env(home: Path, **extra: str) -> dict[str, str]:
    """A machine with no Python of ours, no D-Bus session, no display, no keyring service."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    env["PUSHAGENT_HOME"] = str(home / "pushagent")
    env.update(extra)
    return env


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Background processes the test starts, each in its own process group; the whole group
    is stopped (SIGTERM, then SIGKILL) at the end, newest first."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in reversed(started):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def start(
    procs: list[subprocess.Popen[bytes]], cmd: list[str], env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        p = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    procs.append(p)
    return p


def alive(p: subprocess.Popen[bytes], log: Path) -> None:
    """Fail now, with the process's output, if it has exited (rather than at a deadline)."""
    if p.poll() is not None:
        pytest.fail(f"{p.args[0]} exited with {p.returncode}:\n{log.read_text(errors='replace')}")


# --- the binaries themselves ---------------------------------------------------------------


def test_version_and_build_record(binaries: Binaries, tmp_path: Path) -> None:
    env = bare_env(tmp_path)
    for binary, must_have in ((binaries.agent, "paho-mqtt"), (binaries.relay, "aiohttp")):
        plain = run([str(binary), "--version"], env=env)
        assert (plain.returncode, plain.stdout) == (0, f"{binary.name} {__version__}\n")
        verbose = run([str(binary), "--version", "--verbose"], env=env)
        assert verbose.returncode == 0, verbose.stderr
        lines = verbose.stdout.splitlines()
        assert lines[0] == f"{binary.name} {__version__}"
        assert f"python: {platform.python_version()} (CPython)" in lines
        assert any(line.startswith("build: PyInstaller ") for line in lines)
        deps = dict(line.split() for line in lines[lines.index("dependencies:") + 1 :])
        # Recorded at build time from the build interpreter, not looked up now.
        assert deps[must_have] == metadata.version(must_have)
        assert deps["sqlite-utils"] == metadata.version("sqlite-utils")
    relay_deps = run([str(binaries.relay), "--version", "-v"], env=env).stdout
    assert "desktop-notifier" not in relay_deps  # the relay bundles no desktop libraries


def test_what_a_one_file_binary_unpacks_at_every_start(binaries: Binaries) -> None:
    """A one-file binary unpacks its whole archive on every start: PyGObject in the build
    venv once put GTK and 5,622 Adwaita icon files into both binaries (8 s a start here).
    The relay bundles no GObject at all; the agent's tray only the hicolor icons."""
    from PyInstaller.archive.readers import CArchiveReader

    relay = list(CArchiveReader(str(binaries.relay)).toc)
    assert [n for n in relay if n.startswith(("gi_typelibs/", "share/", "gi/"))] == []
    agent = list(CArchiveReader(str(binaries.agent)).toc)
    icons = {n.split("/")[2] for n in agent if n.startswith("share/icons/")}
    assert icons <= {"hicolor"}, icons
    assert "gi_typelibs/AyatanaAppIndicator3-0.1.typelib" in agent  # the SNI tray menu stays
    assert len(relay) < 400 and len(agent) < 1500, (len(relay), len(agent))


def test_headless_without_dbus_or_keyring(
    binaries: Binaries,
    mosquitto: Mosquitto,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    """The desktop notifier on a box with no D-Bus and no display: a warning, the log
    notifier instead, the message stored, and never a traceback."""
    env = bare_env(tmp_path)
    log = tmp_path / "agent.log"
    cmd = [
        str(binaries.agent),
        "run",
        "--server",
        mosquitto.url,
        "--topic",
        "box/#",
        "--notifier",
        "desktop",
    ]
    agent = start(processes, cmd, env, log)
    history = [str(binaries.agent), "history", "--json", "--since", "all"]

    def delivered() -> bool:
        alive(agent, log)
        pub = run(
            [
                "mosquitto_pub",
                "-p",
                str(mosquitto.port),
                "-q",
                "1",
                "-t",
                "box/door",
                "-m",
                json.dumps({"id": "headless1", "message": "door open"}),
            ]
        )
        assert pub.returncode == 0, pub.stderr
        out = run(history, env=env)
        return out.returncode == 0 and any(m["id"] == "headless1" for m in json.loads(out.stdout))

    wait_for(delivered, timeout=60, interval=0.5, what="the message in history")
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text
    assert re.search(r"WARNING.*(d-?bus|notif)", text, re.IGNORECASE), text
    for args in (["config", "show"], ["history"]):
        out = run([str(binaries.agent), *args], env=env)
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr


def test_desktop_notification_from_the_binary(
    binaries: Binaries,
    mosquitto: Mosquitto,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    """With a real notification daemon (dunst on Xvfb, in a D-Bus session) the frozen
    agent's desktop backend works: the message reaches the state ``displayed``, which only
    a daemon's acceptance records. (Caught desktop-notifier's icon resource missing from the
    bundle, which silently fell back to the log notifier.)"""
    read, write = os.pipe()
    with os.fdopen(read) as displayfd:
        xvfb = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write), "-screen", "0", "640x480x24"],
            pass_fds=(write,),
            start_new_session=True,
            stderr=subprocess.DEVNULL,
        )
        processes.append(xvfb)
        os.close(write)
        display = ":" + displayfd.readline().strip()
    env = bare_env(tmp_path, DISPLAY=display)
    script = 'dunst >"$1" 2>&1 & shift; exec "$@"'
    cmd = [
        "dbus-run-session",
        "--",
        "sh",
        "-c",
        script,
        "sh",
        str(tmp_path / "dunst.log"),
        str(binaries.agent),
        "run",
        "--server",
        mosquitto.url,
        "--topic",
        "desk/#",
        "--notifier",
        "desktop",
    ]
    agent = start(processes, cmd, env, tmp_path / "agent.log")
    history = [str(binaries.agent), "history", "--json", "--since", "all"]

    def displayed() -> bool:
        alive(agent, tmp_path / "agent.log")
        pub = run(
            [
                "mosquitto_pub",
                "-p",
                str(mosquitto.port),
                "-q",
                "1",
                "-t",
                "desk/a",
                "-m",
                json.dumps({"id": "desk1", "title": "hi", "message": "shown"}),
            ]
        )
        assert pub.returncode == 0, pub.stderr
        out = run(history, env=env)
        rows = json.loads(out.stdout) if out.returncode == 0 else []
        return any(m["id"] == "desk1" and m["state"] == "displayed" for m in rows)

    wait_for(displayed, timeout=60, interval=0.5, what="the message displayed by dunst")
    text = (tmp_path / "agent.log").read_text(errors="replace")
    assert "Traceback" not in text and "unavailable" not in text, text


@pytest.mark.desktop
def test_tray_from_the_binary_on_a_statusnotifier_host(
    binaries: Binaries, bare_desktop: Desktop, mosquitto: Mosquitto, tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:  # fmt: skip
    """The frozen agent's tray on a real SNI host (tests/sni.py): its item registers, so the
    bundle's PyGObject and AppIndicator typelib load with only the hicolor icon theme
    collected (GI_HOOKS); a message shows in its menu; "Open history" opens the window;
    "Quit" ends it with 0. Without the typelib it would fall back to an X11 icon and no item
    would register."""
    start_host(bare_desktop)
    bus = Bus(bare_desktop)
    env = {**bare_env(tmp_path), **bare_desktop.env}
    log = tmp_path / "tray.log"
    argv = [str(binaries.agent), "-v", "tray", "--server", mosquitto.url, "--topic", "bin/#",
            "--notifier", "log"]  # fmt: skip
    tray = start(processes, argv, env, log)

    class Problem:  # what Item.only shows when no item registers
        proc = tray

        @staticmethod
        def problem() -> str:
            return log.read_text(errors="replace")[-4000:]

    item = Item.only(bus, Problem())
    assert (item.prop("Id"), item.prop("Status")) == ("edgepush", "Active")
    wait_for(lambda: item.prop("Title") == "edgepush: connected", timeout=30, interval=0.2,
             what=f"connected (log: {Problem.problem()})")  # fmt: skip
    pub = run(["mosquitto_pub", "-p", str(mosquitto.port), "-q", "1", "-t", "bin/a", "-m", "hi"])
    assert pub.returncode == 0, pub.stderr
    wait_for(lambda: "● bin/a: hi" in item.labels(), timeout=30, interval=0.2,
             what="the message in the menu")  # fmt: skip
    item.click("Open history")
    wait_for(lambda: bare_desktop.windows("^edgepush history$"), timeout=30, what="history")
    item.click("Quit")
    assert tray.wait(30) == 0, Problem.problem()
    text = log.read_text(errors="replace")
    assert "Traceback" not in text and "plain X11 icon" not in text, text


def test_login_without_keyring_is_one_clear_line(binaries: Binaries, tmp_path: Path) -> None:
    env = bare_env(tmp_path)
    out = run(
        [str(binaries.agent), "login", "mqtt://127.0.0.1:1883", "--user", "u"],
        env=env,
        input="secret\n",
    )
    # No keyring service here: the password goes to a 0600 file in the config folder, and
    # one line on stderr says so and where. No traceback, no log lines, no password in it.
    assert out.returncode == 0, (out.returncode, out.stderr)
    assert out.stdout == "", out.stdout
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("no OS keyring here: stored the password for u at "), lines
    assert "secrets.json (mode 0600)" in lines[0], lines
    assert "secret\n" not in out.stderr and " secret" not in out.stderr


def test_end_to_end_relay_and_agent_binaries(
    binaries: Binaries,
    mosquitto: Mosquitto,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    """mosquitto ← edge-relay (upstream) ← pushagent; a curl-style POST to the relay shows up
    in ``pushagent history --json``. Only the two binaries run; no Python of ours."""
    port = free_port()
    relay = f"http://127.0.0.1:{port}"
    relay_cmd = [
        str(binaries.relay),
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--data-dir",
        str(tmp_path / "relay"),
        "--upstream",
        mosquitto.url,
        "--upstream-topic",
        "edgepush/#",
        "--no-advertise",
    ]
    relay_proc = start(processes, relay_cmd, bare_env(tmp_path / "r"), tmp_path / "relay.log")

    def healthy() -> bool:
        alive(relay_proc, tmp_path / "relay.log")
        return _get(f"{relay}/v1/health") is not None

    wait_for(healthy, timeout=30, what="relay health")

    env = bare_env(tmp_path / "a")
    agent_cmd = [
        str(binaries.agent),
        "run",
        "--server",
        relay,
        "--topic",
        "alerts",
        "--notifier",
        "log",
    ]
    agent = start(processes, agent_cmd, env, tmp_path / "agent.log")

    def connected() -> bool:
        alive(agent, tmp_path / "agent.log")
        out = run([str(binaries.agent), "status", "--json"], env=env)
        return out.returncode == 0 and json.loads(out.stdout).get("state") == "connected"

    wait_for(connected, timeout=30, interval=0.2, what="agent connected to the relay")
    req = urllib.request.Request(
        f"{relay}/alerts",
        data=b"disk full on nas",
        method="POST",
        headers={"Title": "nas", "Priority": "high"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        sent = json.loads(resp.read())

    def stored() -> list[dict[str, object]]:
        out = run([str(binaries.agent), "history", "--json", "--since", "all"], env=env)
        assert out.returncode == 0, out.stderr
        return [m for m in json.loads(out.stdout) if m["id"] == sent["id"]]

    (msg,) = wait_for(stored, timeout=30, interval=0.2, what="the POSTed message in history")
    assert (msg["topic"], msg["title"], msg["message"], msg["priority"]) == (
        "alerts",
        "nas",
        "disk full on nas",
        4,
    )
    # the web app is inside the binary: every asset served as it is in the tree
    static = ROOT / "edge_relay" / "web" / "static"
    assets = [p for p in static.rglob("*") if p.is_file()]
    assert len(assets) > 10
    for asset in assets:
        name = asset.relative_to(static).as_posix()
        assert _get(f"{relay}/app/{name}") == asset.read_bytes(), name
    page = _get(f"{relay}/")
    assert page is not None and b"/app/main.js" in page
    for log in ("relay.log", "agent.log"):
        assert "Traceback" not in (tmp_path / log).read_text(errors="replace")


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bytes(resp.read())
    except OSError:
        return None


# --- the .deb and the units -----------------------------------------------------------------


def test_deb_passes_lintian(deb: Path) -> None:
    out = run(["lintian", "--tag-display-limit", "0", str(deb)], timeout=120)
    errors = [line for line in out.stdout.splitlines() if line.startswith("E:")]
    assert errors == [], out.stdout
    assert out.returncode == 0, out.stdout + out.stderr


def test_deb_installs_into_a_throwaway_root(installed: Path) -> None:
    for unit in ("lib/systemd/system/edge-relay.service", "usr/lib/systemd/user/pushagent.service"):
        text = (installed / unit).read_text()
        exe = re.search(r"^ExecStart=(\S+)", text, re.MULTILINE)
        assert exe, unit
        binary = installed / exe.group(1).lstrip("/")
        assert os.access(binary, os.X_OK), f"{unit} expects {exe.group(1)}"
        out = run([str(binary), "--version"], env=bare_env(installed / "tmp"))
        assert out.stdout == f"{binary.name} {__version__}\n"
    # postinst made the service user (systemd-sysusers, honouring DPKG_ROOT) ...
    passwd = (installed / "etc/passwd").read_text()
    assert re.search(r"^edge-relay:x:\d+:\d+:.*:/var/lib/edge-relay:", passwd, re.MULTILINE)
    # ... an empty, root-only token file (everything denied until `token add`) ...
    auth = installed / "etc/edge-relay/auth.json"
    assert json.loads(auth.read_text())["tokens"] == {}
    assert auth.stat().st_mode & 0o077 == 0
    # ... and enabled nothing.
    assert not list(installed.glob("etc/systemd/**/*.wants"))
    conffiles = run(
        [
            "dpkg-query",
            f"--admindir={installed / 'var/lib/dpkg'}",
            "-W",
            "-f=${Conffiles}",
            "edgepush",
        ]
    ).stdout
    assert "/etc/edge-relay/config.toml" in conffiles
    cfg = tomllib.loads((installed / "etc/edge-relay/config.toml").read_text())
    assert cfg["listen"] == "0.0.0.0:8080"


def verify_unit(root: Path, unit: Path, manpath: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` of ``unit`` inside ``root``, man pages checked too: each
    ``Documentation=man:`` page must be found in ``manpath`` (the root's own man folder; the
    host's has none of ours). The root gets the host's targets (sysinit.target, ...) because
    verify loads the unit's dependencies."""
    system = root / "usr/lib/systemd/system"
    system.mkdir(parents=True, exist_ok=True)
    for target in Path("/lib/systemd/system").glob("*.target"):
        if not (system / target.name).exists():
            shutil.copy(target, system / target.name)
    env = {**os.environ, "MANPATH": str(manpath)}
    return run(["systemd-analyze", "verify", f"--root={root}", "--man=yes", str(unit)], env=env)


def test_systemd_analyze_verify_units(installed: Path) -> None:
    """``systemd-analyze verify`` on both units as installed, so it also checks that each
    ExecStart binary exists and each man page named in Documentation= is in the package.
    systemd 252 has no ``--user --root``, so the user unit is verified by the same (system)
    loader — its directives are all valid there."""
    # The system loader only looks in system unit directories: the user unit goes to /run.
    run_dir = installed / "run/systemd/system"
    run_dir.mkdir(parents=True, exist_ok=True)
    user_unit = installed / "usr/lib/systemd/user/pushagent.service"
    shutil.copy(user_unit, run_dir / user_unit.name)
    for unit in (installed / "lib/systemd/system/edge-relay.service", run_dir / user_unit.name):
        out = verify_unit(installed, unit, installed / "usr/share/man")
        assert (out.returncode, out.stderr) == (0, ""), f"{unit}: {out.stderr}"
    relay = (PACKAGING / "systemd/edge-relay.service").read_text()
    for must in (
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "StateDirectory=edge-relay",
        "Restart=on-failure",
        "User=edge-relay",
        "/etc/edge-relay/config.toml",
        "LoadCredential=auth.json:/etc/edge-relay/auth.json",
        "--auth-file %d/auth.json",
    ):
        assert must in relay


# --- install-relay.sh ------------------------------------------------------------------------


def tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path under ``root`` with its type, mode, owner, size, mtime and content hash."""
    import hashlib

    out: dict[str, tuple[object, ...]] = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        if p.is_symlink():
            out[str(p.relative_to(root))] = ("link", os.readlink(p))
        elif p.is_dir():
            out[str(p.relative_to(root))] = ("dir", st.st_mode, st.st_uid, st.st_gid)
        else:
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            out[str(p.relative_to(root))] = (
                "file",
                st.st_mode,
                st.st_uid,
                st.st_gid,
                st.st_mtime_ns,
                digest,
            )
    return out


def test_install_script_twice_leaves_the_same_files(binaries: Binaries, tmp_path: Path) -> None:
    root = tmp_path / "root"
    cmd = [
        "sh",
        str(PACKAGING / "install-relay.sh"),
        "--root",
        str(root),
        "--binary",
        str(binaries.relay),
        "--listen",
        "0.0.0.0:8090",
        "--upstream",
        "mqtt://cloud:1883",
        "--upstream-topic",
        "home/#",
    ]
    env = {**os.environ, "HOME": str(tmp_path)}
    first = run(cmd, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    token = first.stdout.split("shown only now):\n", 1)[1].split("\n", 1)[0].strip()
    assert token and "http://" in first.stdout and ":8090" in first.stdout
    before = tree(root)
    second = run(cmd, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert tree(root) == before
    assert token not in second.stdout  # the token is shown once, never again
    # the unit it wrote names only documentation that it installed (man:edge-relay(1))
    unit = root / "etc/systemd/system/edge-relay.service"
    out = verify_unit(root, unit, root / "usr/local/share/man")
    assert (out.returncode, out.stderr) == (0, ""), f"{unit}: {out.stderr}"
    page = subprocess.run(["man", "-M", str(root / "usr/local/share/man"), "-P", "cat",
                           "edge-relay"], capture_output=True, text=True, timeout=30,
                          check=False, env={**os.environ, "MANWIDTH": "100"})  # fmt: skip
    assert page.returncode == 0, page.stderr
    assert "serve" in page.stdout and "token" in page.stdout  # `edge-relay --help`'s commands

    unit = (root / "etc/systemd/system/edge-relay.service").read_text()
    assert "ExecStart=/usr/local/bin/edge-relay serve" in unit
    assert (root / "etc/systemd/system/multi-user.target.wants/edge-relay.service").is_symlink()
    cfg = tomllib.loads((root / "etc/edge-relay/config.toml").read_text())
    assert (cfg["listen"], cfg["upstream"], cfg["upstream_topics"]) == (
        "0.0.0.0:8090",
        "mqtt://cloud:1883",
        ["home/#"],
    )
    auth = root / "etc/edge-relay/auth.json"
    assert oct(auth.stat().st_mode & 0o777) == "0o600"  # the unit reads it via LoadCredential=
    assert token not in auth.read_text()  # only its hash is stored
    assert (root / "usr/local/bin/edge-relay").read_bytes() == binaries.relay.read_bytes()
