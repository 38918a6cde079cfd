"""Hostile payloads through the real paths: mosquitto → agent process, a fake ntfy server →
agent process over WebSocket, mosquitto → relay's upstream bridge.

Each sends something JSON cannot carry back out (``1e400``) and then an honest message, and
checks the outcome: the process alive, the honest message stored exactly once, the hostile one
kept in ``rejected`` (``pushagent history --rejected``; the relay's ``/v1/health`` count).
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve

from agent.envelope import decode
from agent.errors import MessageError
from tests import json_text
from tests.helpers import pushagent, wait_for
from tests.mosquitto import Mosquitto
from tests.mqtt_helpers import Agent, assert_exactly, stored_ids
from tests.relay import Relay

HOSTILE = b'{"id": "evil1", "message": "boom", "n": 1e400}'


def mosquitto_pub(broker: Mosquitto, topic: str, payload: bytes) -> None:
    subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t", topic,
         "-s"], input=payload, timeout=30, check=True,
    )  # fmt: skip


def rejected(home: Path) -> list[dict[str, Any]]:
    out = pushagent("history", "--rejected", "--json", "--limit", "1000", home=home)
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout))


def honest(i: int) -> bytes:
    return json.dumps({"id": f"ok{i:04d}", "message": f"honest {i}"}).encode()


# --- MQTT → agent ---------------------------------------------------------------------------


def test_mqtt_hostile_payload_is_rejected_and_the_next_one_stored_once(
    home: Path, mosquitto: Mosquitto
) -> None:
    agent = Agent(home, mosquitto.url).start()
    mosquitto_pub(mosquitto, "t/x", HOSTILE)
    mosquitto_pub(mosquitto, "t/x", honest(1))
    wait_for(lambda: "ok0001" in stored_ids(home), timeout=30, what="honest message stored")
    assert agent.status().get("state") == "connected"  # raises if the agent exited
    assert_exactly(stored_ids(home), ["ok0001"])
    rows = rejected(home)
    assert [r["topic"] for r in rows] == ["t/x"]
    assert rows[0]["payload"].encode() == HOSTILE and rows[0]["size"] == len(HOSTILE)
    assert "1e400" in rows[0]["reason"] and "'n'" in rows[0]["reason"]
    # acked: a restart gets neither again (no redelivery of the hostile one)
    assert agent.stop() == 0
    agent.start()
    mosquitto_pub(mosquitto, "t/x", honest(2))
    wait_for(lambda: "ok0002" in stored_ids(home), timeout=30, what="second honest stored")
    assert agent.stop() == 0
    assert_exactly(stored_ids(home), ["ok0001", "ok0002"])
    assert len(rejected(home)) == 1


def test_history_rejected_table_shows_control_characters_escaped(
    home: Path, mosquitto: Mosquitto
) -> None:
    agent = Agent(home, mosquitto.url).start()
    # Raw control bytes after a JSON prefix holding -1e400: refused at that number, kept raw.
    evil = b'{"message": "m", "x": -1e400, "y": "\\u001b[2J"}\x1b[2J\x07'
    mosquitto_pub(mosquitto, "t/esc", b'{"id": "e1", "x": 1e999, "message": "\\u001b"}')
    mosquitto_pub(mosquitto, "t/esc", evil)
    mosquitto_pub(mosquitto, "t/esc", honest(3))
    wait_for(lambda: "ok0003" in stored_ids(home), timeout=30, what="honest stored")
    assert agent.stop() == 0
    out = pushagent("history", "--rejected", home=home)
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b[2J\\x07" in text and text.count("reason:") == 2
    assert "t/esc" in text and "1e999" in text


# --- a fake ntfy server → agent over WebSocket -------------------------------------------------


def _frame(**fields: Any) -> str:
    return json.dumps({"time": 1700000000, "event": "message", "topic": "alerts", **fields})


def _ids(home: Path) -> list[str]:
    try:
        return stored_ids(home)
    except sqlite3.OperationalError:  # the agent is still creating its tables
        return []


async def _until(cond: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_ws_agent_rejects_a_1e400_frame_and_stores_the_next_once(home: Path) -> None:
    paths: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        paths.append(ws.request.path)
        await ws.send(json.dumps({"id": "o", "time": 1, "event": "open", "topic": "alerts"}))
        if len(paths) == 1:
            bad = _frame(id="bad1", message="x")[:-1] + ', "n": 1e400}'
            await ws.send(bad)
            await ws.send(_frame(id="good1", message="honest"))
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        agent = Agent(home, f"http://127.0.0.1:{port}", "--topic", "alerts")
        agent.start(wait_connected=False)
        try:
            await _until(lambda: "good1" in _ids(home), what="honest frame stored")
            assert agent.status().get("state") == "connected"
            assert len(paths) == 1  # no reconnect: the bad frame did not break the stream
        finally:
            # In a thread: the fake server runs on this loop, and the agent's orderly close
            # (close frame, receipts POST) needs it to answer while we wait for the exit.
            assert await asyncio.to_thread(agent.stop) == 0
    assert_exactly(stored_ids(home), ["good1"])
    rows = rejected(home)
    assert len(rows) == 1 and "1e400" in rows[0]["payload"] and "bad1" in rows[0]["payload"]
    assert "1e400" in rows[0]["reason"]


# --- mosquitto → the relay's upstream bridge ---------------------------------------------------


def _health(relay: Relay) -> dict[str, Any]:
    return dict(relay.request("GET", "/v1/health")[1])


def test_relay_bridge_survives_a_hostile_upstream_message_and_stops_promptly(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    relay = Relay(tmp_path / "relay", args=["--upstream", mosquitto.url, "--upstream-topic",
                  "cloud/#"]).start()  # fmt: skip
    try:
        wait_for(lambda: _health(relay)["upstream"]["state"] == "connected", timeout=20,
                 what="upstream connected")  # fmt: skip
        mosquitto_pub(mosquitto, "cloud/alerts", HOSTILE)
        mosquitto_pub(mosquitto, "cloud/alerts", honest(7))
        wait_for(lambda: _poll_ids(relay) == ["ok0007"], timeout=20, what="honest via relay")
        health = _health(relay)
        assert health["upstream"]["state"] == "connected" and health["rejected"] == 1
        metrics = relay.request("GET", "/metrics")[1]
        assert "edge_relay_rejected_messages 1.0" in str(metrics)
    finally:
        started = time.monotonic()
        assert relay.stop() == 0
        assert time.monotonic() - started < 10
    # restarted: the hostile one was acked (not redelivered), the bridge comes back connected
    relay.start()
    try:
        wait_for(lambda: _health(relay)["upstream"]["state"] == "connected", timeout=20,
                 what="upstream connected after restart")  # fmt: skip
        mosquitto_pub(mosquitto, "cloud/alerts", honest(8))
        wait_for(lambda: _poll_ids(relay) == ["ok0007", "ok0008"], timeout=20, what="second")
        assert _health(relay)["rejected"] == 1
    finally:
        assert relay.proc is not None
        relay.proc.send_signal(signal.SIGTERM)
        relay.proc.wait(timeout=10)


def _poll_ids(relay: Relay) -> list[str]:
    return [e["id"] for e in relay.poll("cloud-alerts", "since=all") if e["event"] == "message"]


# --- property: generated hostile JSON through the real MQTT → agent path --------------------


def test_generated_hostile_json_never_blocks_the_honest_message_after_it(
    home: Path, mosquitto: Mosquitto
) -> None:
    """Real processes started once for the whole test; hypothesis drives the payloads. What
    the agent does with each is predicted by the pure decoder, and checked exactly."""
    agent = Agent(home, mosquitto.url).start()
    seen = {"n": 0, "rejected": 0}

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(json_text.envelopes, json_text.values))
    def one(text: str) -> None:
        seen["n"] += 1
        mark = f"ok{1000 + seen['n']:04d}"
        hostile = text.encode()
        before = stored_ids(home)
        try:
            expect_id: str | None = decode(hostile, topic="t/fuzz").id
            if '"id"' not in text:
                expect_id = None  # made up at decode: a new message, whatever its id
        except MessageError:
            expect_id = "rejected"
        mosquitto_pub(mosquitto, "t/fuzz", hostile)
        mosquitto_pub(mosquitto, "t/fuzz", honest(1000 + seen["n"]))
        wait_for(lambda: mark in stored_ids(home), timeout=30,
                 what=f"honest message after {hostile[:80]!r}")  # fmt: skip
        assert agent.status().get("state") == "connected"
        ids = stored_ids(home)
        assert ids.count(mark) == 1 and ids[-1] == mark
        rows = rejected(home)
        new_rows = len(rows) - seen["rejected"]
        seen["rejected"] = len(rows)
        new_msgs = len(ids) - len(before) - 1
        if expect_id == "rejected":
            assert (new_msgs, new_rows) == (0, 1), hostile
            assert base64.b64decode(rows[-1]["payload_base64"]) == hostile[:4096]
        elif expect_id is not None and expect_id in before:
            assert (new_msgs, new_rows) == (0, 0), hostile  # a duplicate id: a no-op
        else:
            assert (new_msgs, new_rows) == (1, 0), hostile

    try:
        one()
    finally:
        assert agent.stop() == 0
    assert seen["n"] >= 25


# --- relay publish → WebSocket agent ------------------------------------------------------------


def _post(relay: Relay, body: bytes) -> tuple[int, Any]:
    return relay.request("POST", "/", body, {"Content-Type": "application/json"})


HOSTILE_PUBLISHES = [
    # In a key the relay reads (ntfy drops unknown action keys, so "n": 1e400 is just dropped)
    b'{"topic": "alerts", "message": "m", "actions": [{"action": "http", "label": "x", '
    b'"url": "http://x", "headers": {"n": 1e400}}]}',
    b'{"topic": "alerts", "message": "m", "actions": [{"action": "view", "label": "x", '
    b'"url": "http://x", "n": NaN}]}',
    b'{"topic": "alerts", "message": "m", "tags": {"\\ud800\\udc00": -1e400}}',
    b'{"topic": "alerts", "message": "m", "title": 1e400}',
]


def test_relay_refuses_unencodable_publishes_and_the_ws_agent_gets_the_next_once(
    home: Path, tmp_path: Path
) -> None:
    relay = Relay(tmp_path / "relay").start()
    agent = Agent(home, relay.url, "--topic", "alerts").start()
    try:
        for i, body in enumerate(HOSTILE_PUBLISHES):
            status, answer = _post(relay, body)
            assert 400 <= status < 500, (body, status, answer)
            ok = relay.publish("alerts", f"honest {i}")
            wait_for(lambda ok=ok: ok["id"] in stored_ids(home), timeout=30, what="honest")
        assert _health(relay)["healthy"] is True
        assert agent.status().get("state") == "connected"
        assert len(stored_ids(home)) == len(HOSTILE_PUBLISHES)
        assert len(set(stored_ids(home))) == len(HOSTILE_PUBLISHES)
    finally:
        assert agent.stop() == 0
        assert relay.stop() == 0
    assert "Traceback" not in relay.log.read_text()


def test_generated_hostile_publishes_never_block_the_ws_agent(home: Path, tmp_path: Path) -> None:
    """Relay and agent started once; each generated body is refused (4xx) or delivered, and
    the honest message after it is stored exactly once."""
    relay = Relay(tmp_path / "relay").start()
    agent = Agent(home, relay.url, "--topic", "alerts").start()
    seen = {"n": 0}

    @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
    @given(json_text.envelopes)
    def one(text: str) -> None:
        seen["n"] += 1
        body = text.replace('{"message"', '{"topic": "alerts", "message"', 1).encode()
        status, answer = _post(relay, body)
        assert status < 500, (body, status, answer)
        if status == 200:
            wait_for(lambda: answer["id"] in stored_ids(home), timeout=30, what="delivered")
        ok = relay.publish("alerts", "honest")
        wait_for(lambda: ok["id"] in stored_ids(home), timeout=30, what=f"honest after {body!r}")
        assert stored_ids(home).count(ok["id"]) == 1
        assert agent.status().get("state") == "connected"

    try:
        one()
    finally:
        assert agent.stop() == 0
        assert relay.stop() == 0
    assert seen["n"] >= 20


def test_generated_hostile_upstream_messages_never_block_the_bridge(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """Relay and broker started once; each generated payload published onto the bridged topic
    is either stored (served to local subscribers) or counted as rejected, and the honest one
    after it is stored exactly once, with the upstream still connected."""
    relay = Relay(tmp_path / "relay", args=["--upstream", mosquitto.url, "--upstream-topic",
                  "cloud/#"]).start()  # fmt: skip
    wait_for(lambda: _health(relay)["upstream"]["state"] == "connected", timeout=20,
             what="upstream connected")  # fmt: skip
    seen = {"n": 0}

    @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(json_text.envelopes, json_text.values))
    def one(text: str) -> None:
        seen["n"] += 1
        mark = f"ok{2000 + seen['n']:04d}"
        before_ids, before_rejected = _poll_ids(relay), _health(relay)["rejected"]
        try:
            m = decode(text.encode(), topic="cloud/alerts", max_size=1 << 20)
            outcome = "dup" if '"id"' in text and m.id in before_ids else "stored"
        except MessageError:
            outcome = "rejected"
        mosquitto_pub(mosquitto, "cloud/alerts", text.encode())
        mosquitto_pub(mosquitto, "cloud/alerts", honest(2000 + seen["n"]))
        wait_for(lambda: mark in _poll_ids(relay), timeout=30, what=f"honest after {text[:80]!r}")
        ids, health = _poll_ids(relay), _health(relay)
        assert ids.count(mark) == 1 and health["upstream"]["state"] == "connected"
        got = (len(ids) - len(before_ids) - 1, health["rejected"] - before_rejected)
        assert got == {"stored": (1, 0), "dup": (0, 0), "rejected": (0, 1)}[outcome], text

    try:
        one()
    finally:
        started = time.monotonic()
        assert relay.stop() == 0
        assert time.monotonic() - started < 10
    assert seen["n"] >= 20  # every example went through the real processes
    assert "Traceback" not in relay.log.read_text()
