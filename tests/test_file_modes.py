"""Every file the agent and the relay write is 0600 and every folder they create 0700,
whatever the umask (agent.private) — checked on real processes started under umask 022 and 0.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.private import private_dir, private_file, write_private
from tests.helpers import child_env, pushagent, wait_for
from tests.relay_proc import AgentProc, Publisher, RelayProc


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """This process's umask for the children started inside (RelayProc/AgentProc spawn)."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _modes(*paths: Path) -> dict[str, str]:
    return {p.name: f"{_mode(p):04o}" for p in paths}


@pytest.mark.parametrize("mask", [0o022, 0o000], ids=["umask022", "umask000"])
def test_relay_and_agent_write_only_private_files(tmp_path: Path, mask: int) -> None:
    auth = tmp_path / "etc" / "edge-relay" / "auth.json"
    subprocess.run(
        [sys.executable, "-m", "edge_relay", "token", "--auth-file", str(auth), "add", "laptop",
         "--read", "fm*", "--write", "fm*"],
        env=child_env(), capture_output=True, check=True, timeout=30, umask=mask,
    )  # fmt: skip
    with umask(mask):
        relay = RelayProc(tmp_path / "relay", extra_args=["--auth-file", str(auth)]).start()
    home = tmp_path / "new" / "home"  # neither exists: the agent makes both
    kr = {"PYTHON_KEYRING_BACKEND": "tests.file_keyring.FileKeyring",
          "EDGEPUSH_TEST_KEYRING": str(tmp_path / "keyring.json")}  # fmt: skip
    agent = AgentProc(home, ["--server", relay.url, "--topic", "fm1"], env=kr)
    try:
        secret = _token_of(auth, tmp_path)
        r = subprocess.run(
            [sys.executable, "-m", "agent", "login", relay.url, "--token-stdin"],
            env={**child_env(home), **kr}, input=secret.encode() + b"\n",
            capture_output=True, timeout=30, check=False, umask=mask,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        with umask(mask):
            agent.start()
        err = home / "agent-1.err"
        wait_for(lambda: b"subscribed" in err.read_bytes(), timeout=30, what="the subscription")
        pub = Publisher(relay.port, secret)
        mid = pub.publish("fm1", "private")
        pub.close()
        wait_for(lambda: mid in agent.notified(), timeout=30, what=agent.stderr())
        data = home / "data"
        db = data / "pushagent.db"
        names = ("-wal", "-shm", "-notified")
        files = [db, *(data / f"pushagent.db{n}" for n in names), data / "status.json",
                 data / "logins.json"]  # fmt: skip
        wait_for(lambda: all(p.exists() for p in files), timeout=30, what="the agent's files")
        assert _modes(*files) == dict.fromkeys((p.name for p in files), "0600")
        folders = _modes(tmp_path / "new", home, data)
        assert folders == dict.fromkeys(("new", "home", "data"), "0700")
        rdata = relay.root / "data"
        rfiles = [rdata / "relay.db", rdata / "relay.db-wal", rdata / "relay.db-shm", auth]
        assert _modes(*rfiles) == dict.fromkeys((p.name for p in rfiles), "0600")
        made = (rdata, auth.parent, auth.parent.parent)
        assert _modes(*made) == {"data": "0700", "edge-relay": "0700", "etc": "0700"}
    finally:
        agent.stop()
        relay.stop()


def _token_of(auth: Path, tmp_path: Path) -> str:
    """A second token (the first was printed to a pipe we did not keep)."""
    made = subprocess.run(
        [sys.executable, "-m", "edge_relay", "token", "--auth-file", str(auth), "add", "phone",
         "--read", "fm*", "--write", "fm*"],
        env=child_env(), capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    return made.stdout.decode().strip()


def test_an_older_loose_store_is_tightened_and_existing_folders_left_alone(home: Path) -> None:
    data = home / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    db = data / "pushagent.db"
    db.touch()
    os.chmod(db, 0o644)
    r = pushagent("history", home=home)
    assert r.returncode == 0, r.stderr
    assert (_mode(db), _mode(data)) == (0o600, 0o755)  # the user's folder is theirs


def test_helpers_exact_modes_under_umask_zero(tmp_path: Path) -> None:
    with umask(0):
        private_dir(tmp_path / "a" / "b")
        private_file(tmp_path / "a" / "b" / "f")
        write_private(tmp_path / "a" / "c" / "g.json", b"{}\n")
    got = _modes(tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "c",
                 tmp_path / "a" / "b" / "f", tmp_path / "a" / "c" / "g.json")  # fmt: skip
    assert got == {"a": "0700", "b": "0700", "c": "0700", "f": "0600", "g.json": "0600"}
    assert (tmp_path / "a" / "c" / "g.json").read_bytes() == b"{}\n"
    assert not list((tmp_path / "a" / "c").glob("*.tmp"))
