"""The MQTT agent's edges against a real mosquitto: bad payloads, TLS, send, history,
receipts, credentials (keyring, password file)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as paho
import pytest
import trustme
from paho.mqtt.enums import CallbackAPIVersion

from tests.helpers import free_port, pushagent, wait_for
from tests.mosquitto import Mosquitto
from tests.mqtt_helpers import Agent, Publisher, assert_exactly, stored_ids


class Subscriber:
    """A bare paho subscriber collecting (topic, payload)."""

    def __init__(self, port: int, topic: str) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        granted = threading.Event()
        self.client.on_subscribe = lambda *_: granted.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_for(self.client.is_connected, what="subscriber connected")
        info = self.client.subscribe(topic, qos=1)
        assert info[0] == paho.MQTT_ERR_SUCCESS
        wait_for(granted.is_set, what=f"SUBACK for {topic}")

    def _on_message(self, c: object, u: object, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.got.append((msg.topic, msg.payload))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_bad_payloads_never_stall_the_good_ones(home: Path, mosquitto: Mosquitto):
    (home / "config.toml").write_text("max_message_size = 1024\n")
    agent = Agent(home, mosquitto.url).start()
    good = [f"g{i}" for i in range(6)]
    payloads = [
        json.dumps({"id": "g0", "message": "fine"}).encode(),
        b"\xff\xfe not utf-8",  # rejected
        json.dumps({"id": "g1", "message": "urgent", "priority": 9}).encode(),  # clamped to 5
        b"x" * 2000,  # above max_message_size: rejected
        json.dumps({"id": "g2", "message": "m", "title": 42}).encode(),  # wrong type: rejected
        json.dumps({"id": "g3", "message": "m"}).encode(),
        b"{not json",  # stored as text
        json.dumps({"id": "bad id with spaces", "message": "m"}).encode(),  # rejected
        json.dumps({"id": "g4", "message": "m", "tags": "a,b"}).encode(),
        b"[1, 2, 3]",  # JSON but not an object: stored as text
        json.dumps({"id": "g5", "message": "last"}).encode(),
    ]
    try:
        with Publisher(mosquitto.port) as pub:
            pub.publish("t/bad", payloads)
        wait_for(lambda: "g5" in stored_ids(home), timeout=30, what="the last good one stored")
        stored = stored_ids(home)
        # by name: a plain-text payload's fresh id may start with "g" too (CI: 'ghfdvwfCwWA5')
        assert [i for i in stored if i in good] == ["g0", "g1", "g3", "g4", "g5"]
        assert len(stored) == 7  # + the two plain-text payloads, with fresh ids
        out = pushagent("history", "--json", "--limit", "100", home=home)
        rows = {r["message"]: r for r in json.loads(out.stdout)}
        assert rows["urgent"]["priority"] == 5
        assert "{not json" in rows and "[1, 2, 3]" in rows
        log = agent.log()
        assert log.count("rejected a message") == 4
        assert "not valid UTF-8" in log and "above the limit of 1024" in log
    except BaseException:
        agent.stop()  # a failure must not leak the agent's Popen into a later test's warnings
        raise
    assert agent.stop() == 0
    assert "g2" not in stored and good[2] not in agent.notified()


@pytest.fixture
def tls_broker(tmp_path: Path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    d = tmp_path / "tls"
    d.mkdir()
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    trustme.CA().cert_pem.write_to_path(str(d / "wrong-ca.pem"))
    port = free_port()
    broker = Mosquitto(
        tmp_path / "mosq-tls",
        extra_config=f"listener {port} 127.0.0.1\ncertfile {d}/cert.pem\nkeyfile {d}/key.pem\n",
    ).start()
    wait_for(lambda: _accepts(port), what="TLS listener")
    try:
        yield broker, port, d
    finally:
        broker.stop()


def _accepts(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def test_mqtts_right_ca_connects_wrong_ca_refused(home: Path, tls_broker):
    broker, port, d = tls_broker
    sub = Subscriber(broker.port, "tls/#")
    try:
        url = f"mqtts://127.0.0.1:{port}"
        (home / "config.toml").write_text(f'[tls]\nca_file = "{d}/ca.pem"\n')
        ok = pushagent("send", "--server", url, "tls/x", "over tls", "--id", "tls1", home=home)
        assert ok.returncode == 0, ok.stderr.decode()
        wait_for(lambda: sub.got, what="the TLS message at the broker")
        assert json.loads(sub.got[0][1])["id"] == "tls1"
        (home / "config.toml").write_text(f'[tls]\nca_file = "{d}/wrong-ca.pem"\n')
        bad = pushagent("send", "--server", url, "tls/x", "nope", home=home)
        assert bad.returncode == 1
        assert "TLS failure" in bad.stderr.decode() and "certificate verify failed" in (
            bad.stderr.decode()
        )
        assert len(sub.got) == 1
    finally:
        sub.close()


def test_send_is_seen_by_mosquitto_sub(home: Path, mosquitto: Mosquitto):
    sub = subprocess.Popen(
        ["mosquitto_sub", "-p", str(mosquitto.port), "-t", "news/#", "-q", "1", "-C", "1",
         "-W", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        # mosquitto_sub is subscribed once the broker logged its connection
        wait_for(lambda: mosquitto.log.read_text(errors="replace").count("New client") >= 1,
                 what="mosquitto_sub connected")  # fmt: skip
        r = pushagent("send", "--server", mosquitto.url, "news/today", "hello there",
                      "--title", "Hi", "--priority", "high", "--tags", "a,b",
                      "--click", "https://example.com/", "--id", "send1", home=home)  # fmt: skip
        assert r.returncode == 0, r.stderr.decode()
        # a one-shot command: the id on stdout and nothing on stderr (no INFO per call)
        assert (r.stdout, r.stderr) == (b"send1\n", b"")
        out, _ = sub.communicate(timeout=30)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.communicate()
    env = json.loads(out)
    assert env["id"] == "send1" and env["message"] == "hello there" and env["title"] == "Hi"
    assert env["priority"] == 4 and env["tags"] == ["a", "b"] and env["topic"] == "news/today"
    assert env["click"] == "https://example.com/"


def test_send_reads_stdin_and_fails_cleanly_when_unreachable(home: Path, mosquitto: Mosquitto):
    sub = Subscriber(mosquitto.port, "in/#")
    try:
        r = pushagent("send", "--server", mosquitto.url, "in/x", "-", "--id", "stdin1",
                      home=home, input=b"from stdin\n")  # fmt: skip
        assert r.returncode == 0, r.stderr.decode()
        wait_for(lambda: sub.got, what="message at the broker")
        assert json.loads(sub.got[0][1])["message"] == "from stdin"
    finally:
        sub.close()
    down = pushagent("send", "--server", f"mqtt://127.0.0.1:{free_port()}", "in/x", "m",
                     home=home)  # fmt: skip
    assert down.returncode == 1
    assert b"Connection refused" in down.stderr and len(down.stderr.splitlines()) == 1
    nohost = pushagent("send", "--server", "mqtt://no-such-host.invalid", "in/x", "m", home=home)
    assert nohost.returncode == 1
    assert nohost.stderr == b"pushagent: unknown host 'no-such-host.invalid'\n"


def test_plain_text_from_mosquitto_pub_shows_in_history(home: Path, mosquitto: Mosquitto):
    agent = Agent(home, mosquitto.url).start()
    subprocess.run(
        ["mosquitto_pub", "-p", str(mosquitto.port), "-q", "1", "-t", "t/door",
         "-m", "front door opened"],
        check=True, timeout=30,
    )  # fmt: skip
    wait_for(lambda: stored_ids(home), timeout=30, what="stored")
    assert agent.stop() == 0
    rows = json.loads(pushagent("history", "--json", home=home).stdout)
    assert [(r["topic"], r["message"]) for r in rows] == [("t/door", "front door opened")]
    table = pushagent("history", home=home).stdout.decode()
    assert "front door opened" in table and "t/door" in table
    printed = (home / "notified.jsonl").read_text().splitlines()
    assert [json.loads(line)["message"] for line in printed] == ["front door opened"]


def test_receipts_reach_the_receipt_topic(home: Path, mosquitto: Mosquitto):
    sub = Subscriber(mosquitto.port, "edgepush/receipts/#")
    try:
        agent = Agent(home, mosquitto.url).start()
        client_id = agent.status()["client_id"]
        with Publisher(mosquitto.port) as pub:
            pub.publish("t/r", [json.dumps({"id": f"r{i}", "message": "m"}).encode()
                                for i in range(20)])  # fmt: skip
        # delivered when stored, displayed when the log notifier wrote it out
        wait_for(lambda: len(sub.got) >= 40, timeout=30, what="40 receipts")
        assert agent.stop() == 0
    finally:
        sub.close()
    assert {t for t, _ in sub.got} == {f"edgepush/receipts/{client_id}"}
    bodies = [json.loads(p) for _, p in sub.got]
    assert sorted((b["id"], b["state"]) for b in bodies) == sorted(
        (f"r{i}", state) for i in range(20) for state in ("delivered", "displayed")
    )
    assert all(isinstance(b["time"], int) for b in bodies)


def test_receipts_can_be_turned_off(home: Path, mosquitto: Mosquitto):
    (home / "config.toml").write_text("[receipts]\nenabled = false\n")
    sub = Subscriber(mosquitto.port, "edgepush/#")
    try:
        agent = Agent(home, mosquitto.url).start()
        with Publisher(mosquitto.port) as pub:
            pub.publish("t/r", [json.dumps({"id": "off1", "message": "m"}).encode()])
            pub.publish("t/r", [json.dumps({"id": "off2", "message": "m"}).encode()])
        assert_exactly(wait_for(lambda: len(s := stored_ids(home)) == 2 and s), ["off1", "off2"])
        assert agent.stop() == 0
    finally:
        sub.close()
    assert sub.got == []


@pytest.fixture
def auth_broker(tmp_path: Path):
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


def test_login_logout_with_a_keyring(home: Path, auth_broker: Mosquitto, tmp_path: Path):
    kr = {"PYTHON_KEYRING_BACKEND": "tests.file_keyring.FileKeyring",
          "EDGEPUSH_TEST_KEYRING": str(tmp_path / "keyring.json")}  # fmt: skip
    url = auth_broker.url
    denied = pushagent("send", "--server", url, "t/x", "m", home=home, env=kr)
    # a refusal retrying cannot change is exit 2 (agent.errors.ServerRefused)
    assert denied.returncode == 2 and b"refused the connection" in denied.stderr
    # the resident agent, never accepted, stops at start with the broker's reason (an agent
    # that was connected before retries at the cap: tests/test_server_refused.py)
    anon = Agent(home, url, env=kr).start(wait_connected=False)
    assert anon.proc is not None and anon.proc.wait(timeout=30) == 2
    assert "refused the connection" in anon.log()
    anon.err.unlink()
    r = pushagent("login", url, "--user", "alice", home=home, env=kr, input=b"s3cret-pw\n")
    assert r.returncode == 0, r.stderr.decode()
    assert "s3cret-pw" in json.loads((tmp_path / "keyring.json").read_text()).values()
    agent = Agent(home, url, env=kr).start()  # connects with the keyring's password
    ok = pushagent("send", "--server", url, "t/x", "authed", "--id", "auth1", home=home, env=kr)
    assert ok.returncode == 0, ok.stderr.decode()
    wait_for(lambda: stored_ids(home) == ["auth1"], timeout=30, what="stored")
    assert agent.stop() == 0
    assert "s3cret-pw" not in agent.log()
    shown = pushagent("config", "show", home=home, env={**kr, "PUSHAGENT_PASSWORD": "s3cret-pw"})
    assert b"s3cret-pw" not in shown.stdout + shown.stderr
    out = pushagent("logout", url, home=home, env=kr)
    assert out.returncode == 0, out.stderr.decode()
    assert json.loads((tmp_path / "keyring.json").read_text()) == {}
    again = pushagent("send", "--server", url, "t/x", "m", home=home, env=kr)
    assert again.returncode == 2 and b"refused the connection" in again.stderr


def test_password_file_must_be_private(home: Path, auth_broker: Mosquitto):
    pw = home / "password"
    pw.write_text("s3cret-pw\n")
    pw.chmod(0o644)
    (home / "config.toml").write_text(f'[auth]\nusername = "alice"\npassword_file = "{pw}"\n')
    r = pushagent("send", "--server", auth_broker.url, "t/x", "m", home=home)
    assert r.returncode == 2
    assert b"mode 0600" in r.stderr and b"chmod 600" in r.stderr
    pw.chmod(0o600)
    r = pushagent("send", "--server", auth_broker.url, "t/x", "m", home=home)
    assert r.returncode == 0, r.stderr.decode()
    wrong = pushagent("send", "--server", auth_broker.url, "t/x", "m", home=home,
                      env={"PUSHAGENT_PASSWORD": "wrong"})  # fmt: skip
    assert wrong.returncode == 2 and b"refused the connection" in wrong.stderr


def test_mqtt_311_keeps_its_session_across_restarts(home: Path, mosquitto: Mosquitto):
    (home / "config.toml").write_text('[mqtt]\nprotocol = "3.1.1"\n')
    agent = Agent(home, mosquitto.url).start()
    assert agent.stop() == 0
    with Publisher(mosquitto.port) as pub:  # while the agent is offline
        pub.publish("t/v3", [json.dumps({"id": f"v{i}", "message": "m"}).encode()
                             for i in range(10)])  # fmt: skip
    agent.start()
    assert_exactly(wait_for(lambda: len(s := stored_ids(home)) >= 10 and s, timeout=30),
                   [f"v{i}" for i in range(10)])  # fmt: skip
    assert agent.stop() == 0
    assert "(session resumed)" in agent.log()
