"""Delivery analytics at the relay (issue 16): ``/v1/stats?topic=&since=``, the per-device
receipts listing and ``edge-relay stats``, against a real relay with real agents.

Two ``pushagent run`` processes (their own homes and tokens) subscribe over WebSocket and post
their ``delivered``/``displayed`` receipts themselves; clicks and dismissals are posted over
HTTP with the same tokens (the log notifier has no buttons). Every number is asserted exactly.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.analytics import day_label
from tests.helpers import child_env, wait_for
from tests.relay import Relay
from tests.relay_proc import AgentProc
from tests.test_relay_receipts import Tokens

N = 6


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[tuple[Relay, Tokens]]:
    tokens = Tokens(tmp_path / "auth.json")
    tokens.add("alice", "--read", "home*", "ci*", "--write", "home*", "ci*")
    tokens.add("bob", "--read", "home*")
    tokens.add("agent1", "--read", "home*")
    tokens.add("agent2", "--read", "home*")
    relay = Relay(tmp_path / "r", args=["--auth-file", str(tokens.af)]).start()
    try:
        yield relay, tokens
    finally:
        assert relay.stop() == 0


def _agent(tmp_path: Path, relay: Relay, tokens: Tokens, name: str) -> AgentProc:
    home = tmp_path / name
    home.mkdir()
    (home / "config.toml").write_text(f'device_name = "{name}-laptop"\n')
    env = {"PUSHAGENT_TOKEN": tokens.by_name[name]}
    return AgentProc(home, ["--server", relay.url, "--topic", "homedoor"], env=env).start()


def _connected(agent: AgentProc) -> bool:
    try:
        status = json.loads((agent.home / "data" / "status.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(status.get("state") == "connected")


def stats(relay: Relay, tokens: Tokens, who: str | None, query: str) -> tuple[int, Any]:
    return relay.request("GET", f"/v1/stats{query}", None, tokens.h(who))


def post(relay: Relay, tokens: Tokens, who: str, items: list[dict[str, Any]]) -> None:
    status, body = relay.request("POST", "/v1/receipts", json.dumps(items).encode(), tokens.h(who))
    assert status == 200 and body["ignored"] == 0, body


def test_funnel_per_topic_and_day_from_real_agents(
    relay: tuple[Relay, Tokens], tmp_path: Path
) -> None:
    r, tokens = relay
    agents = [_agent(tmp_path, r, tokens, n) for n in ("agent1", "agent2")]
    try:
        for a in agents:
            wait_for(lambda a=a: _connected(a), timeout=30, what=f"agent connected\n{a.stderr()}")
        sent = [r.publish("homedoor", f"door {i}", **tokens.h("alice")) for i in range(N)]
        r.publish("cibuild", "build ok", **tokens.h("alice"))

        def receipts_in() -> bool:
            body = stats(r, tokens, "alice", "?topic=homedoor&since=1d")[1]
            total = body["analytics"]["topics"].get("homedoor", {}).get("total", {})
            return total.get("delivered") == 2 * N and total.get("displayed") == 2 * N

        wait_for(receipts_in, timeout=30, what="both agents' receipts at the relay")
    finally:
        for a in agents:
            a.stop()
    # each agent's device as the relay recorded it from the agent's own receipts
    first = r.request("GET", f"/v1/messages/{sent[0]['id']}/receipts", None, tokens.h("bob"))[1]
    device = {d["owner"]: d["device"] for d in first["devices"]}
    assert sorted(device) == ["agent1", "agent2"]
    # agent1's device clicks three messages 5, 15 and 30 s after publishing; agent2 dismisses two
    post(r, tokens, "agent1", [{"id": m["id"], "state": "clicked", "time": m["time"] + d,
                                "device": device["agent1"]}
                               for m, d in zip(sent[:3], (5, 30, 15), strict=True)])  # fmt: skip
    post(r, tokens, "agent2", [{"id": m["id"], "state": "dismissed", "device": device["agent2"]}
                               for m in sent[3:5]])  # fmt: skip

    status, body = stats(r, tokens, "alice", "?topic=homedoor&since=7d")
    assert status == 200, body
    assert set(body) == {"messages", "messages_rate", "topics", "analytics"}
    report = body["analytics"]
    assert list(report["topics"]) == ["homedoor"]
    want_total = {"published": N, "delivered": 2 * N, "displayed": 2 * N, "clicked": 3,
                  "dismissed": 2, "acknowledged": 0, "ctr": 0.25,
                  "median_click_seconds": 15.0}  # fmt: skip
    assert report["topics"]["homedoor"]["total"] == want_total
    days = Counter(m["time"] // 86400 for m in sent)  # one day, unless the test spans midnight
    assert [d["day"] for d in report["topics"]["homedoor"]["days"]] == [
        day_label(d) for d in sorted(days)
    ]
    assert sum(d["published"] for d in report["topics"]["homedoor"]["days"]) == N
    # the same numbers from the store by the CLI (the relay may keep running)
    cli = _edge_relay("stats", "--data-dir", str(r.dir / "data"), "--topic", "homedoor",
                      "--json")  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["topics"] == report["topics"]
    table = _edge_relay("stats", "--data-dir", str(r.dir / "data"), "--since", "1d")
    assert table.returncode == 0, table.stderr
    total_line = next(x for x in table.stdout.splitlines() if x.startswith("homedoor ")
                      and " total " in x)  # fmt: skip
    assert total_line.split() == ["homedoor", "total", str(N), "12", "12", "3", "2", "0",
                                  "25.0%", "15s"]  # fmt: skip
    assert any(x.startswith("cibuild ") for x in table.stdout.splitlines())  # the operator's view

    # per device: agent1's device went delivered -> displayed -> clicked, with each time
    status, listing = r.request("GET", f"/v1/messages/{sent[1]['id']}/receipts", None,
                                tokens.h("bob"))  # fmt: skip
    assert status == 200, listing
    devices = {d["owner"]: d for d in listing["devices"]}
    assert sorted(devices) == ["agent1", "agent2"]
    assert devices["agent1"]["device_name"] == "agent1-laptop"  # the name its receipts gave
    assert devices["agent2"]["device_name"] == "agent2-laptop"
    assert devices["agent1"]["state"] == "clicked"
    assert sorted(devices["agent1"]["states"]) == ["clicked", "delivered", "displayed"]
    assert devices["agent1"]["states"]["clicked"] == sent[1]["time"] + 30
    assert devices["agent2"]["state"] == "displayed"
    assert listing["time"] == sent[1]["time"]


def test_stats_permissions_errors_and_the_ntfy_shape(relay: tuple[Relay, Tokens]) -> None:
    r, tokens = relay
    r.publish("homedoor", "open", **tokens.h("alice"))
    r.publish("cibuild", "ok", **tokens.h("alice"))
    # without parameters: ntfy's shape as before, nothing more
    status, body = stats(r, tokens, "bob", "")
    assert status == 200 and set(body) == {"messages", "messages_rate", "topics"}
    assert body["messages"] == 2 and list(body["topics"]) == ["homedoor"]
    # a topic the caller cannot read: 403 for a token, 401 without one
    status, body = stats(r, tokens, "bob", "?topic=cibuild")
    assert status == 403 and body["code"] == 40301, body
    status, body = stats(r, tokens, None, "?topic=homedoor&since=1d")
    assert status == 401 and body["code"] == 40101, body
    # a bad since: ntfy's 40008 with its link
    status, body = stats(r, tokens, "alice", "?topic=homedoor&since=yesterday")
    assert status == 400, body
    assert body["code"] == 40008 and body["http"] == 400 and "since" in body["error"]
    assert body["link"].endswith("/subscribe/api/#fetch-cached-messages")
    status, body = stats(r, tokens, "alice", "?topic=no%20such")
    assert status == 400 and body["code"] == 40009, body
    # since alone: every topic the caller may read, and only those
    assert list(stats(r, tokens, "bob", "?since=1d")[1]["analytics"]["topics"]) == ["homedoor"]
    assert list(stats(r, tokens, "alice", "?since=all")[1]["analytics"]["topics"]) == [
        "cibuild", "homedoor"]  # fmt: skip
    # a window that ends before the messages: nothing
    empty = stats(r, tokens, "alice", f"?topic=homedoor&since={int(time.time()) + 3600}")[1]
    assert empty["analytics"]["topics"] == {}


def test_edge_relay_stats_refuses_bad_input(tmp_path: Path) -> None:
    done = _edge_relay("stats", "--data-dir", str(tmp_path), "--since", "soon")
    assert done.returncode == 2 and "is not a duration" in done.stderr
    done = _edge_relay("stats", "--data-dir", str(tmp_path))
    assert done.returncode == 2 and "no relay store at" in done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing created


def _edge_relay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_relay", *args], env=child_env(),
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
