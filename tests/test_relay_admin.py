"""The relay's management API (issue 17's admin backend): ``edge-relay token add --admin``,
``/v1/tokens`` (list, add, revoke) and ``/v1/admin/overview``, against a real relay process.

Writes go through the CLI's locked, atomic 0600 writer, and the running relay applies them at
once: a token added over HTTP works on the next request, one revoked loses its open stream.
"""

from __future__ import annotations

import json
import stat
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from edge_relay.auth import hash_token
from tests.helpers import wait_for
from tests.relay import Relay
from tests.test_relay_auth import edge_relay
from tests.test_relay_receipts import Tokens


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[tuple[Relay, Tokens]]:
    tokens = Tokens(tmp_path / "auth.json")
    tokens.add("boss", "--read", "*", "--write", "*", "--admin")
    tokens.add("alice", "--read", "home*", "--write", "home*")
    relay = Relay(tmp_path / "r", args=["--auth-file", str(tokens.af)]).start()
    try:
        yield relay, tokens
    finally:
        assert relay.stop() == 0


def call(r: Relay, method: str, path: str, who: dict[str, str], body: Any = None) -> Any:
    data = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    return r.request(method, path, data, who)


def test_admin_flag_in_the_cli_and_the_file(tmp_path: Path) -> None:
    af = tmp_path / "auth.json"
    assert edge_relay("token", "--auth-file", str(af), "add", "boss", "--admin").returncode == 0
    assert edge_relay("token", "--auth-file", str(af), "add", "plain").returncode == 0
    data = json.loads(af.read_text())
    assert data["tokens"]["boss"]["admin"] is True and "admin" not in data["tokens"]["plain"]
    assert stat.S_IMODE(af.stat().st_mode) == 0o600
    listing = edge_relay("token", "--auth-file", str(af), "list").stdout.splitlines()
    assert listing[1:] == ["boss  read=- write=-  admin", "plain  read=- write=-"]
    data["tokens"]["plain"]["admin"] = "yes"  # a hand edit that is not a boolean: refused
    af.write_text(json.dumps(data))
    bad = edge_relay("token", "--auth-file", str(af), "list")
    assert bad.returncode == 2 and "'admin' must be true or false" in bad.stderr


def test_only_admin_tokens_reach_the_management_api(relay: tuple[Relay, Tokens]) -> None:
    r, tokens = relay
    routes = [("GET", "/v1/tokens"), ("POST", "/v1/tokens"), ("DELETE", "/v1/tokens/alice"),
              ("GET", "/v1/admin/overview")]  # fmt: skip
    for method, path in routes:
        body = {"name": "x"} if method == "POST" else None
        status, answer = call(r, method, path, {}, body)
        assert (status, answer["code"]) == (401, 40101), (method, path, answer)
        status, answer = call(r, method, path, tokens.h("alice"), body)
        assert (status, answer["code"]) == (403, 40301), (method, path, answer)
    status, listing = call(r, "GET", "/v1/tokens", tokens.h("boss"))
    assert status == 200
    assert [(t["name"], t["admin"], t["read"]) for t in listing["tokens"]] == [
        ("alice", False, ["home*"]), ("boss", True, ["*"])]  # fmt: skip
    assert listing["anonymous"] == {"read": [], "write": []}
    assert "hash" not in json.dumps(listing)
    assert call(r, "GET", "/v1/tokens", tokens.h("alice"))[0] == 403  # still refused after
    # the web app learns the grant from ntfy's account view: role "admin" (ntfy's name)
    assert call(r, "GET", "/v1/account", tokens.h("boss"))[1]["role"] == "admin"
    assert call(r, "GET", "/v1/account", tokens.h("alice"))[1]["role"] == "user"


def test_add_and_revoke_through_the_api_take_effect_at_once(
    relay: tuple[Relay, Tokens],
) -> None:
    r, tokens = relay
    boss = tokens.h("boss")
    ask = {"name": "carol", "read": ["home*"], "write": [], "admin": False}
    status, made = call(r, "POST", "/v1/tokens", boss, ask)
    assert status == 201, made
    secret = made.pop("token")
    assert secret.startswith("tk_") and len(secret) == 32
    assert made["name"] == "carol" and made["read"] == ["home*"] and made["admin"] is False
    entry = json.loads(tokens.af.read_text())["tokens"]["carol"]
    assert entry["hash"] == hash_token(secret) and secret not in tokens.af.read_text()
    assert stat.S_IMODE(tokens.af.stat().st_mode) == 0o600
    carol = {"Authorization": f"Bearer {secret}"}
    assert r.request("GET", "/homedoor/json?poll=1", None, carol)[0] == 200
    assert r.request("PUT", "/homedoor", b"x", carol)[0] == 403  # read only, as asked
    # refusals name the problem
    refused = [({"name": "carol"}, 409), ({"name": "bad name"}, 400),
               ({"name": "d", "read": ["home/*"]}, 400), ({"name": "d", "admin": "yes"}, 400),
               ({"name": "d", "x": 1}, 400), (b"not json", 400),
               ({"name": "d", "read": "home*"}, 400)]  # fmt: skip
    for body, status_want in refused:
        status, answer = call(r, "POST", "/v1/tokens", boss, body)
        assert status == status_want and answer["http"] == status_want, (body, answer)
    # an open stream of carol's ends when she is revoked, and her token is refused after
    ended = threading.Event()

    def stream() -> None:
        req = urllib.request.Request(f"{r.url}/homedoor/json", headers=carol)
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
        ended.set()

    reader = threading.Thread(target=stream, daemon=True)
    reader.start()
    overview = wait_for(lambda: _carol_streaming(r, boss), timeout=10, what="carol's stream")
    assert overview["subscribers"] == 1
    assert call(r, "DELETE", "/v1/tokens/carol", boss) == (200, {"revoked": "carol"})
    assert ended.wait(5), "carol's stream still open after her token was revoked"
    assert r.request("GET", "/homedoor/json?poll=1", None, carol)[0] == 401
    assert call(r, "DELETE", "/v1/tokens/carol", boss)[0] == 404
    status, answer = call(r, "DELETE", "/v1/tokens/boss", boss)
    assert status == 409 and "last admin token" in answer["error"]
    assert [t["name"] for t in call(r, "GET", "/v1/tokens", boss)[1]["tokens"]] == [
        "alice", "boss"]  # fmt: skip


def _carol_streaming(r: Relay, boss: dict[str, str]) -> Any:
    body = call(r, "GET", "/v1/admin/overview", boss)[1]
    names = {s["name"]: s for s in body["streams"]}
    ok = names.get("carol", {}).get("topics") == {"homedoor": 1}
    return body if ok else None


def test_cli_and_api_writers_never_lose_each_others_tokens(relay: tuple[Relay, Tokens]) -> None:
    r, tokens = relay

    def by_cli(i: int) -> int:
        return edge_relay("token", "--auth-file", str(tokens.af), "add", f"cli{i}").returncode

    def by_api(i: int) -> int:
        return int(call(r, "POST", "/v1/tokens", tokens.h("boss"), {"name": f"api{i}"})[0])

    with ThreadPoolExecutor(8) as pool:
        cli = list(pool.map(by_cli, range(6)))
        api = list(pool.map(by_api, range(6)))
    assert cli == [0] * 6 and api == [201] * 6
    names = {t["name"] for t in call(r, "GET", "/v1/tokens", tokens.h("boss"))[1]["tokens"]}
    assert names == {"alice", "boss"} | {f"cli{i}" for i in range(6)} | {
        f"api{i}" for i in range(6)
    }


def test_overview_numbers(relay: tuple[Relay, Tokens]) -> None:
    r, tokens = relay
    ids = [r.publish("homedoor", f"m{i}", **tokens.h("alice"))["id"] for i in range(5)]
    receipts = [{"id": i, "state": "displayed", "device": "p-1", "device_name": "phone"}
                for i in ids[:3]]  # fmt: skip
    status, _ = call(r, "POST", "/v1/receipts", tokens.h("alice"), receipts)
    assert status == 200
    status, body = call(r, "GET", "/v1/admin/overview", tokens.h("boss"))
    assert status == 200, body
    assert sum(h["messages"] for h in body["messages_per_hour"]) == 5
    assert body["store"]["messages"] == 5 and body["subscribers"] == 0
    assert [(d["owner"], d["device"], d["device_name"], d["receipts"])
            for d in body["devices"]] == [("alice", "p-1", "phone", 3)]  # fmt: skip
    assert body["upstream"] == {"url": None, "state": "none", "outbox": 0, "last_error": None}


def test_without_an_auth_file(tmp_path: Path) -> None:
    r = Relay(tmp_path / "open").start()
    try:
        status, body = call(r, "GET", "/v1/tokens", {})
        assert status == 409 and "without --auth-file" in body["error"]
        assert call(r, "GET", "/v1/admin/overview", {})[0] == 200  # an open relay is open
    finally:
        assert r.stop() == 0
