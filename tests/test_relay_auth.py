"""Token auth against a real relay: the token CLI, read/write patterns, Bearer and ?auth=."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

from tests.helpers import child_env
from tests.relay import FAST, Relay


def edge_relay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_relay", *args], env=child_env(),
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip


def test_token_cli_and_permissions(tmp_path: Path) -> None:
    af = str(tmp_path / "auth.json")
    add = edge_relay("token", "--auth-file", af, "add", "sensor", "--write", "home*", "--read")
    assert add.returncode == 0, add.stderr
    writer = add.stdout.strip()
    reader = edge_relay("token", "add", "phone", "--read", "home*", "alerts",
                        "--auth-file", af).stdout.strip()  # fmt: skip
    assert writer.startswith("tk_") and writer not in Path(af).read_text()
    listing = edge_relay("token", "--auth-file", af, "list").stdout
    assert "sensor  read=- write=home*" in listing and "phone  read=home*,alerts" in listing
    dup = edge_relay("token", "--auth-file", af, "add", "sensor")
    assert dup.returncode == 2 and "exists" in dup.stderr

    relay = Relay(tmp_path / "r", args=["--auth-file", af]).start()
    try:
        bearer = lambda tok: {"Authorization": f"Bearer {tok}"}  # noqa: E731
        assert relay.request("PUT", "/homedoor", b"x")[0] == 401  # anonymous: nothing
        status, body = relay.request("PUT", "/homedoor", b"open", bearer(writer))
        assert status == 200 and body["message"] == "open"
        status, body = relay.request("PUT", "/alerts", b"x", bearer(writer))
        assert status == 403 and "sensor" in body["error"] and "write" in body["error"]
        assert relay.request("PUT", "/homedoor", b"x", bearer("tk_" + "x" * 29))[0] == 401
        assert relay.request("GET", "/homedoor/json?poll=1", None, bearer(writer))[0] == 403
        status, text = relay.request("GET", "/homedoor/json?poll=1", None, bearer(reader))
        assert status == 200 and text["message"] == "open"
        # ntfy's ?auth=: base64 of the whole Authorization header value, no padding
        auth = base64.urlsafe_b64encode(f"Bearer {reader}".encode()).decode().rstrip("=")
        status, _ = relay.request("GET", f"/homedoor,alerts/json?poll=1&auth={auth}")
        assert status == 200
        assert relay.request("GET", "/homedoor/json?poll=1&auth=!!!")[0] == 401
        # revoking takes effect without a restart (the relay re-reads a changed file)
        assert edge_relay("token", "--auth-file", af, "revoke", "phone").returncode == 0
        assert relay.request("GET", "/homedoor/json?poll=1", None, bearer(reader))[0] == 401
        # anonymous grants come from the file too
        edge_relay("token", "--auth-file", af, "anonymous", "--read", "public*")
        assert relay.request("GET", "/publicnews/json?poll=1")[0] == 200
        assert relay.request("PUT", "/publicnews", b"x")[0] == 401
    finally:
        assert relay.stop() == 0


def test_no_auth_file_means_open(tmp_path: Path) -> None:
    relay = Relay(tmp_path, config=FAST).start()
    try:
        assert relay.request("PUT", "/anything", b"x")[0] == 200
    finally:
        assert relay.stop() == 0
