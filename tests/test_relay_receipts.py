"""Receipts at the relay are bound to the caller: owner = token name, read access required,
unknown and forbidden ids answer alike, and the client's clock is not trusted blindly.

A real relay process with tokens made by the real CLI.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.relay import Relay
from tests.test_relay_auth import edge_relay


class Tokens:
    def __init__(self, af: Path) -> None:
        self.af = af
        self.by_name: dict[str, str] = {}

    def add(self, name: str, *args: str) -> str:
        done = edge_relay("token", "--auth-file", str(self.af), "add", name, *args)
        assert done.returncode == 0, done.stderr
        self.by_name[name] = done.stdout.strip()
        return self.by_name[name]

    def h(self, name: str | None) -> dict[str, str]:
        return {} if name is None else {"Authorization": f"Bearer {self.by_name[name]}"}


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Relay, Tokens, str]]:
    tokens = Tokens(tmp_path / "auth.json")
    tokens.add("alice", "--read", "home*", "--write", "home*")
    tokens.add("bob", "--read", "home*")
    tokens.add("eve", "--read", "other*")
    relay = Relay(tmp_path / "r", args=["--auth-file", str(tokens.af)]).start()
    mid = relay.publish("homedoor", "open", **tokens.h("alice"))["id"]
    try:
        yield relay, tokens, mid
    finally:
        assert relay.stop() == 0


def post(relay: Relay, tokens: Tokens, who: str | None, items: list[dict[str, Any]]) -> Any:
    return relay.request("POST", "/v1/receipts", json.dumps(items).encode(), tokens.h(who))


def listing(relay: Relay, tokens: Tokens, mid: str, who: str = "alice") -> list[Any]:
    status, body = relay.request("GET", f"/v1/messages/{mid}/receipts", None, tokens.h(who))
    assert status == 200, body
    return [(r["owner"], r["device"], r["state"], r["time"]) for r in body["receipts"]]


def test_each_caller_has_its_own_receipts_under_its_token_name(
    setup: tuple[Relay, Tokens, str],
) -> None:
    relay, tokens, mid = setup
    now = int(time.time())
    same = {"id": mid, "state": "displayed", "device": "phone"}
    assert post(relay, tokens, "alice", [{**same, "time": now - 20}]) == (
        200, {"accepted": 1, "ignored": 0})  # fmt: skip
    # bob names the same device: his receipt is his own and alice's stays as it was
    assert post(relay, tokens, "bob", [{**same, "time": now - 10}])[1]["accepted"] == 1
    assert post(relay, tokens, "bob", [{**same, "state": "clicked", "time": now - 5}])[0] == 200
    assert listing(relay, tokens, mid) == [
        ("alice", "phone", "displayed", now - 20),
        ("bob", "phone", "displayed", now - 10),
        ("bob", "phone", "clicked", now - 5),
    ]
    assert listing(relay, tokens, mid, "bob") == listing(relay, tokens, mid)
    stats = relay.request("GET", "/v1/stats", None, tokens.h("alice"))[1]["topics"]["homedoor"]
    assert stats == {"published": 1, "delivered": 0, "displayed": 2, "clicked": 1}


def test_a_receipt_needs_read_access_and_unknown_ids_look_the_same(
    setup: tuple[Relay, Tokens, str],
) -> None:
    relay, tokens, mid = setup
    unknown = "x" * len(mid)
    for who in ("eve", None):
        status, body = post(relay, tokens, who, [
            {"id": mid, "state": "clicked", "device": "d"},
            {"id": unknown, "state": "clicked", "device": "d"}])  # fmt: skip
        if who is None:  # anonymous may read nothing here: it needs a token at all
            assert status == 401 and "homedoor" not in body["error"]
        else:
            assert (status, body) == (200, {"accepted": 0, "ignored": 2})
        answers = []
        for m in (mid, unknown):
            status, body = relay.request("GET", f"/v1/messages/{m}/receipts", None, tokens.h(who))
            assert status == 404, (who, status, body)
            assert "homedoor" not in body["error"]
            answers.append(body["error"].replace(m, "<id>"))
        assert answers[0] == answers[1]  # nothing tells a known id from an unknown one
    bad = {"Authorization": "Bearer tk_" + "z" * 29}
    status, body = relay.request("GET", f"/v1/messages/{mid}/receipts", None, bad)
    assert status == 401 and "homedoor" not in body["error"]
    assert listing(relay, tokens, mid) == []  # nothing eve sent was recorded


def test_a_client_clock_far_off_is_replaced_by_the_relays(
    setup: tuple[Relay, Tokens, str],
) -> None:
    relay, tokens, mid = setup
    now = time.time()
    post(relay, tokens, "alice", [
        {"id": mid, "state": "delivered", "device": "future", "time": now + 10 * 86400},
        {"id": mid, "state": "delivered", "device": "epoch", "time": 1000},
        {"id": mid, "state": "delivered", "device": "recent", "time": int(now) - 100},
        {"id": mid, "state": "delivered", "device": "none"}])  # fmt: skip
    got = {device: at for _, device, _, at in listing(relay, tokens, mid)}
    assert got["recent"] == int(now) - 100  # within the window: kept as the client said
    for device in ("future", "epoch", "none"):
        assert abs(got[device] - now) < 60, (device, got[device], now)


def test_one_caller_cannot_inflate_stats_with_invented_devices(
    setup: tuple[Relay, Tokens, str],
) -> None:
    relay, tokens, mid = setup
    many = [{"id": mid, "state": "displayed", "device": f"d{i}"} for i in range(40)]
    assert post(relay, tokens, "bob", many) == (200, {"accepted": 16, "ignored": 24})
    # a device already recorded still reports its next state; another owner has its own room
    assert post(relay, tokens, "bob", [{"id": mid, "state": "clicked", "device": "d3"}])[1] == {
        "accepted": 1, "ignored": 0}  # fmt: skip
    assert post(relay, tokens, "alice", many[:2])[1] == {"accepted": 2, "ignored": 0}
    rows = listing(relay, tokens, mid)
    assert len({d for o, d, _, _ in rows if o == "bob"}) == 16 and len(rows) == 16 + 1 + 2
    stats = relay.request("GET", "/v1/stats", None, tokens.h("bob"))[1]["topics"]["homedoor"]
    assert stats["displayed"] == 18 and stats["clicked"] == 1
