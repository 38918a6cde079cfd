"""No usable OS keyring (a headless Pi): ``pushagent login`` keeps the secret in a 0600 file in
the agent's config folder, says so in one line, and the agent reads it from there.

keyring's own ``null`` (accepts, keeps nothing) and ``fail`` (refuses) backends, selected with
PYTHON_KEYRING_BACKEND as a user would; a real mosquitto with a password file and a real relay
with a token check that the stored secret is the one used.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import child_env, pushagent
from tests.mosquitto import Mosquitto
from tests.relay import Relay

pytestmark = pytest.mark.timeout(120)

BACKENDS = ["keyring.backends.null.Keyring", "keyring.backends.fail.Keyring"]


def one_line(result: subprocess.CompletedProcess[bytes]) -> str:
    err = result.stderr.decode()
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


def secrets_file(home: Path) -> Path:
    path = home / "secrets.json"  # PUSHAGENT_HOME: the config folder is the home itself
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return path


@pytest.mark.parametrize("backend", BACKENDS)
def test_login_without_a_keyring_stores_in_a_0600_file_and_says_so(
    home: Path, backend: str
) -> None:
    env = {"PYTHON_KEYRING_BACKEND": backend}
    r = pushagent("login", "mqtt://broker.lan", "--user", "ann", home=home, env=env,
                  input=b"hunter2\n")  # fmt: skip
    assert r.returncode == 0, r.stderr
    line = one_line(r)
    assert line == (f"no OS keyring here: stored the password for ann at mqtt://broker.lan in "
                    f"{home / 'secrets.json'} (mode 0600)"), line  # fmt: skip
    r = pushagent("login", "http://relay.lan:8080", "--token-stdin", home=home, env=env,
                  input=b"tk_abc\n")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert one_line(r).startswith("no OS keyring here: stored the access token for "), r.stderr
    data = json.loads(secrets_file(home).read_text())
    assert data["passwords"]["mqtt://broker.lan"] == {"user": "ann", "password": "hunter2"}
    assert data["tokens"]["http://relay.lan:8080"] == "tk_abc"
    r = pushagent("logout", "mqtt://broker.lan", home=home, env=env)
    assert r.returncode == 0 and "removed the login" in one_line(r), r.stderr
    r = pushagent("logout", "http://relay.lan:8080", home=home, env=env)
    assert r.returncode == 0 and "removed the token" in one_line(r), r.stderr
    assert json.loads(secrets_file(home).read_text()) == {"passwords": {}, "tokens": {}}


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    pw = tmp_path / "mosq-passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "alice", "s3cret-pw"], check=True)
    os.chmod(pw, 0o644)  # mosquitto (running as us) must read it
    broker = Mosquitto(
        tmp_path / "mosq-auth", extra_config=f"allow_anonymous false\npassword_file {pw}\n"
    ).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_agent_reads_the_password_from_the_file(
    home: Path, auth_broker: Mosquitto, backend: str
) -> None:
    env = {"PYTHON_KEYRING_BACKEND": backend}
    url = auth_broker.url
    r = pushagent("login", url, "--user", "alice", home=home, env=env, input=b"s3cret-pw\n")
    assert r.returncode == 0, r.stderr
    sent = pushagent("send", "--server", url, "t/x", "m", "--id", "viafile1", home=home, env=env)
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout == b"viafile1\n"
    secrets_file(home).chmod(0o644)  # others could read it now: refused, with the fix
    r = pushagent("send", "--server", url, "t/x", "m", home=home, env=env)
    assert r.returncode == 2 and "chmod 600" in one_line(r), r.stderr


def test_the_agent_reads_the_token_from_the_file(home: Path, tmp_path: Path) -> None:
    env = {"PYTHON_KEYRING_BACKEND": BACKENDS[0]}
    af = tmp_path / "auth.json"
    made = subprocess.run(
        [sys.executable, "-m", "edge_relay", "token", "--auth-file", str(af), "add", "box",
         "--write", "home*", "--read", "home*"],
        env=child_env(), capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    relay = Relay(tmp_path / "r", args=["--auth-file", str(af)]).start()
    try:
        denied = pushagent("send", "--server", relay.url, "homedoor", "x", home=home, env=env)
        assert denied.returncode != 0
        token = made.stdout.strip()
        r = pushagent("login", relay.url, "--token-stdin", home=home, env=env,
                      input=token.encode() + b"\n")  # fmt: skip
        assert r.returncode == 0, r.stderr
        ok = pushagent("send", "--server", relay.url, "homedoor", "open", home=home, env=env)
        assert ok.returncode == 0, ok.stderr
        bearer = {"Authorization": f"Bearer {token}"}
        status, body = relay.request("GET", "/homedoor/json?poll=1", None, bearer)
        assert status == 200 and body["message"] == "open", body
    finally:
        assert relay.stop() == 0
