"""The agent and the relay against brokers nobody configured for us: RabbitMQ 3.10 (MQTT
plugin) and NATS 2.9 (JetStream + MQTT), both speaking only MQTT 3.1.1 (issue 13).

With the defaults (``[mqtt] protocol = "auto"``) ``pushagent run``, ``pushagent send`` and
the relay's upstream bridge (down and up) connect and move messages, and receipts reach the
broker; the answer is remembered per server (0600) and re-probed by ``status --probe`` or
after a week; a protocol set by hand that the broker does not speak is an error that says so
and names the key.
"""

from __future__ import annotations

import json
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.brokers import Broker, Client311
from tests.helpers import pushagent, wait_for
from tests.mqtt_helpers import Agent, stored_ids
from tests.relay import Relay

BROKERS = ["rabbitmq", "nats"]


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest) -> Broker:
    b: Broker = request.getfixturevalue(request.param)
    return b


def _uniq() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def _memory(home: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((home / "data" / "mqtt-protocols.json").read_text())
    return data


def test_run_connects_with_the_defaults_and_stores_a_message(broker: Broker, home: Path) -> None:
    topic = _uniq()
    agent = Agent(home, broker.url, "--topic", f"{topic}/#").start()  # waits for "connected"
    try:
        pub = Client311(broker.port, f"pub-{topic}")
        try:
            pub.publish(f"{topic}/a", json.dumps({"id": f"{topic}-1", "message": "hi"}).encode())
            pub.publish(f"{topic}/a", b"plain text")
        finally:
            pub.close()
        ids = wait_for(lambda: len(s := stored_ids(home)) >= 2 and s, timeout=20,
                       what="both messages stored")  # fmt: skip
        assert f"{topic}-1" in ids and len(ids) == 2
        assert "with MQTT 3.1.1" in agent.log()
    finally:
        assert agent.stop() == 0


def test_receipts_reach_the_broker(broker: Broker, home: Path) -> None:
    topic = _uniq()
    client_id = f"pushagent-{topic}"
    obs = Client311(broker.port, f"obs-{topic}")
    try:
        obs.subscribe(f"edgepush/receipts/{client_id}")
        (home / "config.toml").write_text(f'client_id = "{client_id}"\n')
        agent = Agent(home, broker.url, "--topic", f"{topic}/#").start()
        try:
            obs.publish(f"{topic}/a", json.dumps({"id": f"{topic}-r", "message": "m"}).encode())
            wait_for(lambda: obs.received, timeout=20, what="a delivered receipt")
            receipt = json.loads(obs.received[0][1])
            assert receipt["id"] == f"{topic}-r" and receipt["state"] == "delivered"
        finally:
            assert agent.stop() == 0
    finally:
        obs.close()


def test_send_with_the_defaults_reaches_a_subscriber(broker: Broker, home: Path) -> None:
    topic = _uniq()
    sub = Client311(broker.port, f"sub-{topic}")
    try:
        sub.subscribe(f"{topic}/#")
        sent = pushagent("send", "--server", broker.url, f"{topic}/x", "hello", home=home)
        assert sent.returncode == 0, sent.stderr
        msg_id = sent.stdout.decode().strip()
        wait_for(lambda: sub.received, timeout=15, what="the sent message")
        t, payload = sub.received[0]
        assert t == f"{topic}/x"
        body = json.loads(payload)
        assert body["id"] == msg_id and body["message"] == "hello"
    finally:
        sub.close()


def test_the_answer_is_remembered_0600_and_used_at_the_next_start(
    broker: Broker, home: Path
) -> None:
    topic = _uniq()
    agent = Agent(home, broker.url, "--topic", f"{topic}/#").start()
    assert agent.stop() == 0
    path = home / "data" / "mqtt-protocols.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [(server, entry)] = _memory(home).items()
    assert server.endswith(f"127.0.0.1:{broker.port}") and entry["protocol"] == "3.1.1"
    assert abs(entry["probed"] - time.time()) < 120
    assert agent.log().count("trying MQTT 3.1.1") == 1  # the fallback's reason, logged once

    again = Agent(home, broker.url, "--topic", f"{topic}/#").start()
    assert again.stop() == 0
    assert again.log().count("trying MQTT 3.1.1") == 1  # none more: straight to 3.1.1
    assert again.log().count("with MQTT 3.1.1") == 2


def test_a_week_old_answer_is_probed_again(nats: Broker, home: Path) -> None:
    (home / "data").mkdir(parents=True)
    week_ago = time.time() - 8 * 86400
    path = home / "data" / "mqtt-protocols.json"
    path.write_text(json.dumps({nats.url: {"protocol": "3.1.1", "probed": week_ago}}))
    agent = Agent(home, nats.url, "--topic", f"{_uniq()}/#").start()
    assert agent.stop() == 0
    assert "MQTT 5 did not work" in agent.log()  # MQTT 5 was tried again
    assert _memory(home)[nats.url]["probed"] > week_ago + 86400


def test_status_probe_asks_the_server_now_and_replaces_the_memory(
    broker: Broker, home: Path
) -> None:
    (home / "data").mkdir(parents=True)
    (home / "config.toml").write_text(f'servers = ["{broker.url}"]\n')
    path = home / "data" / "mqtt-protocols.json"
    path.write_text(json.dumps({broker.url: {"protocol": "5", "probed": time.time()}}))
    out = pushagent("status", "--probe", "--json", home=home)
    assert out.returncode == 3, out.stderr  # no daemon running: still exit 3
    probed = json.loads(out.stdout)["protocols"]
    assert probed == [{"server": broker.url, "protocol": "3.1.1"}]
    assert _memory(home)[broker.url]["protocol"] == "3.1.1"
    text = pushagent("status", "--probe", home=home)
    assert f"{broker.url}: MQTT 3.1.1 (probed now)" in text.stdout.decode()


def test_a_protocol_set_by_hand_that_the_broker_refuses_names_the_key(
    broker: Broker, home: Path
) -> None:
    out = pushagent("send", "--mqtt-protocol", "5", "--server", broker.url, "x/y", "hi",
                    home=home, timeout=60)  # fmt: skip
    err = out.stderr.decode().strip()
    assert out.returncode != 0 and len(err.splitlines()) == 1, err
    assert "MQTT 5" in err and '[mqtt] protocol = "auto"' in err and "Traceback" not in err
    ok = pushagent("send", "--mqtt-protocol", "3.1.1", "--server", broker.url, "x/y", "hi",
                   home=home)  # fmt: skip
    assert ok.returncode == 0, ok.stderr


def test_relay_bridge_down_and_up(broker: Broker, tmp_path: Path) -> None:
    t = _uniq()
    relay = Relay(tmp_path / "relay", args=["--upstream", broker.url, "--upstream-topic",
                  f"{t}/#", "--forward", f"{t}up*"]).start()  # fmt: skip
    obs = Client311(broker.port, f"obs-{t}")
    try:
        wait_for(lambda: relay.request("GET", "/v1/health")[1]["upstream"]["state"]
                 == "connected", timeout=30, what=f"upstream connected ({relay.log})")  # fmt: skip
        obs.subscribe(f"{t}up/#")
        obs.publish(f"{t}/door", b"opened")  # down: broker -> relay
        down = wait_for(lambda: relay.poll(f"{t}-door"), timeout=20, what="message down")
        assert [m["message"] for m in down] == ["opened"]
        sent = relay.publish(f"{t}up-bell", "ring")  # up: relay -> broker
        wait_for(lambda: obs.received, timeout=20, what="message forwarded up")
        topic, payload = obs.received[0]
        assert topic == f"{t}up/bell" and json.loads(payload)["id"] == sent["id"]
    finally:
        obs.close()
        assert relay.stop() == 0
    assert "with MQTT 3.1.1" in relay.log.read_text()


def test_relay_upstream_protocol_key_and_flag(rabbitmq: Broker, tmp_path: Path) -> None:
    bad = Relay(tmp_path / "bad", config='[upstream]\nprotocol = "4"\n',
                args=["--upstream", rabbitmq.url])  # fmt: skip
    with pytest.raises(AssertionError, match="exited"):
        bad.start()
    assert '\'upstream.protocol\' must be "auto", "5" or "3.1.1", not \'4\'' in bad.log.read_text()

    forced = Relay(tmp_path / "v5", args=["--upstream", rabbitmq.url, "--mqtt-protocol", "5"])
    forced.start()
    try:
        wait_for(lambda: "[upstream] protocol" in forced.log.read_text(), timeout=30,
                 what="an error naming [upstream] protocol")  # fmt: skip
        assert relay_state(forced) != "connected"
    finally:
        forced.stop()

    table = Relay(tmp_path / "table",
                  config=f'[upstream]\nurl = "{rabbitmq.url}"\nprotocol = "3.1.1"\n')  # fmt: skip
    table.start()
    try:
        wait_for(lambda: relay_state(table) == "connected", timeout=30, what="connected")
        assert "MQTT 5 did not work" not in table.log.read_text()  # 3.1.1 at once
    finally:
        table.stop()


def relay_state(relay: Relay) -> str:
    return str(relay.request("GET", "/v1/health")[1]["upstream"]["state"])
