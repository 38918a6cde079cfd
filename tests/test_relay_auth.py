"""Token auth against a real relay: the token CLI, read/write patterns, Bearer and ?auth=."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge_relay import auth, revoke
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


# --- the auth file edited by hand: validated, the last good one kept, 503 not 500 ----------


def hand_file(path: Path, tokens: dict[str, dict[str, object]], anonymous: object = None) -> None:
    """Write an auth file as an operator would with an editor (in place, no CLI)."""
    data: dict[str, object] = {"tokens": tokens}
    if anonymous is not None:
        data["anonymous"] = anonymous
    path.write_text(json.dumps(data, indent=1))


def entry(token: str, read: object, write: object = ()) -> dict[str, object]:
    return {"hash": hashlib.sha256(token.encode()).hexdigest(), "read": read,
            "write": list(write) if isinstance(write, tuple) else write}  # fmt: skip


PHONE = "tk_" + "p" * 29


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def log_lines(relay: Relay, needle: str) -> int:
    return sum(needle in line for line in relay.log.read_text().splitlines())


def test_a_string_read_grants_nothing_and_answers_503(tmp_path: Path) -> None:
    af = tmp_path / "auth.json"
    hand_file(af, {"phone": entry(PHONE, "home*")})  # a string, not a list
    relay = Relay(tmp_path / "r", args=["--auth-file", str(af)]).start()
    try:
        for topic in ("alerts", "homedoor", "x"):  # tuple("home*") holds "*": every topic
            status, body = relay.request("GET", f"/{topic}/json?poll=1", None, bearer(PHONE))
            assert status == 503, (topic, status, body)
            assert body["code"] == 50301 and body["http"] == 503
            assert "auth file" in body["error"]
        assert relay.request("PUT", "/alerts", b"x", bearer(PHONE))[0] == 503
        assert relay.request("PUT", "/alerts", b"x")[0] == 503  # anonymous: no decision either
        assert relay.request("GET", "/v1/health")[0] == 200  # needs no auth decision
        # why, logged once for the one version of the file, not once per request
        assert log_lines(relay, "'read' must be a list") == 1, relay.log.read_text()
    finally:
        assert relay.stop() == 0


def test_a_corrupt_file_keeps_the_last_good_one_and_logs_once_per_change(tmp_path: Path) -> None:
    af = tmp_path / "auth.json"
    other = "tk_" + "o" * 29
    hand_file(af, {"phone": entry(PHONE, ["home*"])})
    relay = Relay(tmp_path / "r", args=["--auth-file", str(af)]).start()
    try:
        assert relay.request("GET", "/homedoor/json?poll=1", None, bearer(PHONE))[0] == 200
        af.write_text('{"tokens": {"phone": {"hash": ')  # an editor saved half a file
        for _ in range(5):
            # the last good grants still work...
            assert relay.request("GET", "/homedoor/json?poll=1", None, bearer(PHONE))[0] == 200
            # ...and what they would refuse cannot be decided: 503 in ntfy's shape, never 500
            status, body = relay.request("GET", "/alerts/json?poll=1", None, bearer(PHONE))
            assert status == 503 and body["http"] == 503 and "alerts" not in body["error"]
            status, body = relay.request("GET", "/homedoor/json?poll=1", None, bearer(other))
            assert status == 503 and body["code"] == 50301
        assert log_lines(relay, "cannot read auth file") == 1, relay.log.read_text()
        hand_file(af, {"phone": entry(PHONE, ["home*"], write={"a": 1})})  # broken another way
        assert relay.request("GET", "/alerts/json?poll=1", None, bearer(PHONE))[0] == 503
        assert log_lines(relay, "'write' must be a list") == 1
        assert log_lines(relay, "cannot read auth file") == 1
        hand_file(af, {"phone": entry(PHONE, ["alerts"]), "other": entry(other, ["home*"])})
        assert relay.request("GET", "/alerts/json?poll=1", None, bearer(PHONE))[0] == 200
        assert relay.request("GET", "/homedoor/json?poll=1", None, bearer(PHONE))[0] == 403
        assert relay.request("GET", "/homedoor/json?poll=1", None, bearer(other))[0] == 200
        assert "500" not in relay.log.read_text()
    finally:
        assert relay.stop() == 0


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"tokens": {"phone": {"hash": ', "cannot read auth file"),
        ('{"tokens": {"phone": {"hash": "x", "read": []}}}', "'hash' must be"),
        ('{"tokens": {"phone": {"hash": "' + "a" * 64 + '", "read": "home*"}}}',
         "'read' must be a list"),
        ('{"tokens": {"phone": {"hash": "' + "a" * 64 + '", "read": ["home/*"]}}}',
         "pattern 'home/*'"),
        ('{"anonymous": ["public*"], "tokens": {}}', "'anonymous' must be an object"),
        ('[]', "must hold a JSON object"),
    ],
)  # fmt: skip
def test_token_commands_refuse_a_broken_file_and_leave_it_alone(
    tmp_path: Path, content: str, problem: str
) -> None:
    af = tmp_path / "auth.json"
    af.write_text(content)
    for args in (["add", "new", "--read", "x"], ["list"], ["revoke", "phone"],
                 ["anonymous", "--read", "x"]):  # fmt: skip
        done = edge_relay("token", "--auth-file", str(af), *args)
        assert done.returncode == 2, (args, done)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and str(af) in lines[0] and problem in lines[0], (args, lines)
        assert done.stdout == ""
        assert af.read_text() == content  # never overwritten


def test_token_add_refuses_a_pattern_no_topic_can_match(tmp_path: Path) -> None:
    af = tmp_path / "auth.json"
    done = edge_relay("token", "--auth-file", str(af), "add", "phone", "--read", "home/*")
    assert done.returncode == 2 and "pattern 'home/*'" in done.stderr
    assert not af.exists()


# --- the pure parts: the format check and which open streams a new file still allows ------


def test_parse_refuses_what_would_grant_by_accident() -> None:
    h = "a" * 64
    assert auth.parse({"tokens": {"p": {"hash": h, "read": ["home*"]}}}).tokens["p"]["read"] == [
        "home*"
    ]
    for bad, problem in [
        ({"tokens": {"p": {"hash": h, "read": "home*"}}}, "'read' must be a list"),
        ({"tokens": {"p": {"hash": h, "read": [1]}}}, "must be a string"),
        ({"tokens": {"p": {"hash": h, "write": [""]}}}, "pattern ''"),
        ({"tokens": {"p": {"hash": h.upper()}}}, "'hash' must be"),
        ({"tokens": {"p": {"read": []}}}, "'hash' must be"),
        ({"tokens": {"a b": {"hash": h}}}, "token name 'a b'"),
        ({"tokens": {"p": []}}, "must be an object"),
        ({"anonymous": {"read": "*"}}, "anonymous: 'read' must be a list"),
        ({"tokenz": {}}, "unknown key 'tokenz'"),
    ]:
        with pytest.raises(ValueError, match=re.escape(problem)):
            auth.parse(bad)


def test_withdrawn_streams_are_the_revoked_and_the_narrowed_only() -> None:
    a, b = "tk_" + "a" * 29, "tk_" + "b" * 29
    ha, hb = auth.hash_token(a), auth.hash_token(b)
    db = auth.parse({"anonymous": {"read": ["pub"]},
                     "tokens": {"a": {"hash": ha, "read": ["x", "y"]},
                                "b": {"hash": hb, "read": ["*"]}}})  # fmt: skip
    ended: list[tuple[str, str]] = []
    reg = revoke.Streams()

    def stream(name: str, digest: str, *topics: str) -> revoke.OpenStream:
        label = f"{name}:{','.join(topics)}"
        return revoke.OpenStream(digest, name, topics, lambda why: ended.append((label, why)))

    for s in (stream("a", ha, "x"), stream("a", ha, "x", "y"), stream("b", hb, "y"),
              stream("anonymous", "", "pub")):  # fmt: skip
        reg.add(s)
    assert reg.recheck(db) == 0 and len(reg) == 4
    narrowed = auth.parse({"tokens": {"a": {"hash": ha, "read": ["x"]},
                                      "b": {"hash": "c" * 64, "read": ["*"]}}})  # fmt: skip
    assert reg.recheck(narrowed) == 3
    assert sorted(ended) == [
        ("a:x,y", "read access to 'y' withdrawn"),
        ("anonymous:pub", "read access to 'pub' withdrawn"),
        ("b:y", "token revoked"),  # the name is still there, but it is another token now
    ]
    assert len(reg) == 1 and reg.recheck(narrowed) == 0
