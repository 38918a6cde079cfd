"""End-to-end encrypted topics with real processes (issue 15's "Proven by").

* agent <- relay <- ``pushagent send --encrypt``: the holder of the key shows the text; a
  second agent without it stores ``undecryptable`` and shows "encrypted message on TOPIC",
  then ``pushagent key import`` decrypts the stored one in place, and the running agent
  opens the next one without a restart; the relay's database never holds the plaintext.
* agent <- mosquitto <- a publisher written with joserfc and paho directly (no edgepush
  code): decrypted; a tampered byte -> ``undecryptable``, its text never shown; the same id
  in clear after it is not merged; mosquitto's persistence file holds the ciphertext (the
  search is on a file that has the message) and not the plaintext.

Keyrings: tests/file_keyring (a real keyring backend; no OS keyring daemon runs here).
"""

from __future__ import annotations

import json
import sqlite3
import urllib.request
import uuid
from pathlib import Path

import paho.mqtt.client as paho
from joserfc import jwe as rfc_jwe
from joserfc.jwk import OctKey
from paho.mqtt.enums import CallbackAPIVersion

from tests.helpers import complete_lines, pushagent, wait_for
from tests.mosquitto import Mosquitto
from tests.mqtt_helpers import Agent
from tests.relay_proc import RelayProc

DEBUG = {"PUSHAGENT_LOG_LEVEL": "debug"}


def keyring_env(tmp_path: Path, name: str) -> dict[str, str]:
    return {
        "PYTHON_KEYRING_BACKEND": "tests.file_keyring.FileKeyring",
        "EDGEPUSH_TEST_KEYRING": str(tmp_path / f"{name}-keyring.json"),
    }


def shown(agent: Agent) -> list[dict[str, object]]:
    if not agent.out.exists():
        return []
    return [json.loads(line) for line in complete_lines(agent.out.read_bytes()) if line.strip()]


def shown_ids(agent: Agent) -> dict[str, dict[str, object]]:
    return {str(m["id"]): m for m in shown(agent)}


def stored(home: Path, mid: str) -> tuple[str, str, str | None, str | None]:
    with sqlite3.connect(home / "data" / "pushagent.db", timeout=10) as conn:
        row = conn.execute(
            "SELECT message, state, e2e, ciphertext FROM messages WHERE id = ?", (mid,)
        ).fetchone()
    assert row is not None, f"{mid} not stored"
    return row


def rejected(home: Path) -> list[str]:
    with sqlite3.connect(home / "data" / "pushagent.db", timeout=10) as conn:
        return [str(r[0]) for r in conn.execute("SELECT reason FROM rejected")]


def files_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_relay_send_encrypt_two_agents_import_decrypts_in_place(tmp_path: Path) -> None:
    relay = RelayProc(tmp_path / "relay").start()
    ea, eb = keyring_env(tmp_path, "a"), keyring_env(tmp_path, "b")
    ha, hb = tmp_path / "a", tmp_path / "b"
    hb.mkdir()
    secret = "door-" + uuid.uuid4().hex
    title = "hall-" + uuid.uuid4().hex
    a = b = None
    try:
        assert pushagent("key", "new", "alerts", home=ha, env=ea).returncode == 0
        a = Agent(ha, relay.url, "--topic", "alerts", env={**ea, **DEBUG}).start()
        b = Agent(hb, relay.url, "--topic", "alerts", env={**eb, **DEBUG}).start()
        r = pushagent("send", "--encrypt", "--server", relay.url, "alerts", secret,
                      "--title", title, "--priority", "5", home=ha, env=ea)  # fmt: skip
        assert r.returncode == 0, r.stderr
        mid = r.stdout.decode().strip()
        wait_for(lambda: mid in shown_ids(a) and mid in shown_ids(b), timeout=30,  # type: ignore[arg-type]
                 what="both agents showed the message")  # fmt: skip
        got_a, got_b = shown_ids(a)[mid], shown_ids(b)[mid]
        assert got_a["message"] == secret and got_a["title"] == title
        assert got_a["priority"] == 5 and got_a["state"] == "received"
        assert got_b["message"] == "encrypted message on alerts" and "title" not in got_b
        assert got_b["state"] == "undecryptable"
        assert secret not in b.out.read_text()
        msg, state, e2e, token = stored(hb, mid)
        assert (state, e2e) == ("undecryptable", "jwe") and token and token.startswith("eyJ")

        # what any ntfy client polling the relay sees: an opaque message, encoding jwe,
        # and neither the title nor the real priority (not exposed)
        with urllib.request.urlopen(f"{relay.url}/alerts/json?poll=1", timeout=10) as resp:
            [frame] = [json.loads(x) for x in resp.read().splitlines() if x.strip()][-1:]
        assert frame["id"] == mid and frame["encoding"] == "jwe" and frame["message"] == token
        assert "title" not in frame and frame["priority"] == 3
        # the relay stored and fanned out the ciphertext only
        relay_files = files_bytes(tmp_path / "relay" / "data")
        assert token.encode() in relay_files
        assert secret.encode() not in relay_files and title.encode() not in relay_files

        # B imports the key: the stored message is decrypted in place
        exported = pushagent("key", "export", "alerts", home=ha, env=ea).stdout.decode().strip()
        imp = pushagent("key", "import", "alerts", exported, home=hb, env=eb)
        assert imp.returncode == 0, imp.stderr
        assert "decrypted 1 stored message(s), 0 still undecryptable" in imp.stderr.decode()
        msg, state, e2e, token = stored(hb, mid)
        assert (msg, state, e2e, token) == (secret, "received", "jwe", None)
        hist = pushagent("history", "--json", home=hb, env=eb)
        assert secret in hist.stdout.decode()
        # the running B shows it again, now with its text (it watches the key index)
        wait_for(lambda: shown_ids(b)[mid]["message"] == secret, timeout=15,
                 what="B showed the decrypted message")  # fmt: skip
        assert [m["message"] for m in shown(b) if m["id"] == mid] == [
            "encrypted message on alerts",
            secret,
        ]

        # ... and the running B opens the next one without a restart
        second = "window-" + uuid.uuid4().hex
        r2 = pushagent("send", "--encrypt", "--expose-priority", "--priority", "4",
                       "--server", relay.url, "alerts", second, home=ha, env=ea)  # fmt: skip
        mid2 = r2.stdout.decode().strip()
        wait_for(lambda: mid2 in shown_ids(b), timeout=30, what="B showed the second")
        assert shown_ids(b)[mid2]["message"] == second and shown_ids(b)[mid2]["priority"] == 4
        with urllib.request.urlopen(f"{relay.url}/alerts/json?poll=1", timeout=10) as resp:
            frames = {json.loads(x)["id"]: json.loads(x) for x in resp.read().splitlines()}
        assert frames[mid2]["priority"] == 4  # exposed on purpose, for quiet hours
        assert second.encode() not in files_bytes(tmp_path / "relay" / "data")

        # no key ever reached a log line (log level debug: every library's logger)
        k = exported.removeprefix("ek1.")
        assert k not in a.log() and k not in b.log() and k not in relay.log_path.read_text()
    finally:
        for agent in (a, b):
            if agent is not None:
                agent.stop(timeout=15)
        relay.stop()


def jose_publisher_payload(key: bytes, kid: str, mid: str, inner: dict[str, object]) -> bytes:
    """What a publisher in any language does with a standard JOSE library (docs/E2E.md)."""
    token = rfc_jwe.encrypt_compact(
        {"alg": "dir", "enc": "A256GCM", "kid": kid},
        json.dumps(inner).encode(),
        OctKey.import_key(key),
    )
    return json.dumps({"id": mid, "message": token, "encoding": "jwe"}).encode()


def test_mosquitto_jose_publisher_tampering_and_persistence(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosquitto").start()
    env = keyring_env(tmp_path, "m")
    home = tmp_path / "m"
    agent = None
    try:
        assert pushagent("key", "new", "e2e/door", home=home, env=env).returncode == 0
        exported = pushagent("key", "export", "e2e/door", home=home, env=env).stdout
        import base64
        import hashlib

        key = base64.urlsafe_b64decode(exported.decode().strip().removeprefix("ek1.") + "=")
        # the kid as docs/E2E.md defines it: RFC 7638 thumbprint, first 16 characters
        jwk = json.dumps({"k": base64.urlsafe_b64encode(key).rstrip(b"=").decode(),
                          "kty": "oct"}, separators=(",", ":"))  # fmt: skip
        kid = base64.urlsafe_b64encode(hashlib.sha256(jwk.encode()).digest()).decode()[:16]
        agent = Agent(home, broker.url, "--topic", "e2e/#", env=env).start()

        secret = "gate-" + uuid.uuid4().hex
        good = jose_publisher_payload(key, kid, "good1", {"message": secret, "title": "Gate"})
        tampered_text = "tamper-" + uuid.uuid4().hex
        bad = json.loads(jose_publisher_payload(key, kid, "bad1", {"message": tampered_text}))
        parts = bad["message"].split(".")
        i = len(parts[3]) // 2
        parts[3] = parts[3][:i] + ("A" if parts[3][i] != "A" else "B") + parts[3][i + 1 :]
        bad["message"] = ".".join(parts)
        clear_copy = json.dumps({"id": "good1", "message": "Injected in clear"}).encode()

        client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        try:
            for payload in (good, json.dumps(bad).encode(), clear_copy):
                client.publish("e2e/door", payload, qos=1).wait_for_publish(10)
            # one retained copy, so mosquitto's persistence file holds the ciphertext
            client.publish("e2e/door", good, qos=1, retain=True).wait_for_publish(10)
        finally:
            client.disconnect()
            client.loop_stop()

        wait_for(
            lambda: {"good1", "bad1"} <= set(shown_ids(agent)) and rejected(home),  # type: ignore[arg-type]
            timeout=30, what="the agent showed both and kept the clear copy aside",
        )  # fmt: skip
        lines = shown(agent)
        assert [m["id"] for m in lines].count("good1") == 1  # the clear copy is not merged
        got = shown_ids(agent)
        assert got["good1"]["message"] == secret and got["good1"]["title"] == "Gate"
        assert got["bad1"]["message"] == "encrypted message on e2e/door"
        assert got["bad1"]["state"] == "undecryptable"
        assert tampered_text not in agent.out.read_text()
        assert "Injected in clear" not in agent.out.read_text()
        assert stored(home, "good1")[0] == secret
        [reason] = rejected(home)
        # in one batch with the encrypted one, or in a later batch: kept aside either way
        assert reason.startswith("id good1 arrived") and reason.endswith("not merged")

        # pushagent send --encrypt over MQTT: the same envelope shape, opened the same way
        sent = "bell-" + uuid.uuid4().hex
        r = pushagent("send", "--encrypt", "--server", broker.url, "e2e/door", sent,
                      "--title", "Bell", home=home, env=env)  # fmt: skip
        assert r.returncode == 0, r.stderr
        sid = r.stdout.decode().strip()
        wait_for(lambda: sid in shown_ids(agent), timeout=30, what="send --encrypt shown")  # type: ignore[arg-type]
        assert shown_ids(agent)[sid]["message"] == sent  # type: ignore[arg-type]

        broker.stop()  # SIGTERM: mosquitto writes its persistence file
        persisted = (tmp_path / "mosquitto" / "mosquitto.db").read_bytes()
        assert json.loads(good)["message"].encode() in persisted
        assert secret.encode() not in persisted and tampered_text.encode() not in persisted
    finally:
        if agent is not None and agent.proc is not None and agent.proc.poll() is None:
            agent.stop(timeout=15)
        broker.stop()


def test_agent_refuses_a_key_file_others_can_read(tmp_path: Path) -> None:
    env = {"PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}
    home = tmp_path / "h"
    assert pushagent("key", "new", "alerts", home=home, env=env).returncode == 0
    (home / "e2e-keys.json").chmod(0o640)
    r = pushagent("run", "--server", "mqtt://127.0.0.1:9", "--topic", "alerts",
                  "--notifier", "log", home=home, env=env)  # fmt: skip
    err = r.stderr.decode()
    assert r.returncode == 2 and "Traceback" not in err
    assert (
        f"pushagent: E2E key file {home / 'e2e-keys.json'}: must be readable by you only "
        "(mode 0600), not 0640" in err
    )


def test_send_encrypt_refuses_what_would_leave_in_clear_or_as_a_file(tmp_path: Path) -> None:
    env = {"PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}
    home = tmp_path / "h"
    server = "http://127.0.0.1:9"  # nothing listens: each refusal comes before any request
    assert pushagent("key", "new", "alerts", home=home, env=env).returncode == 0
    (tmp_path / "f.txt").write_text("x")
    cases = [
        (("--attach", str(tmp_path / "nope.txt"), "alerts", "hi"), "--attach: cannot read"),
        (("alerts", "x" * 3500), "--encrypt: the encrypted message is"),
        (("other", "hi"), "--encrypt: no key for 'other' here"),
    ]  # fmt: skip
    for args, want in cases:
        r = pushagent("send", "--encrypt", "--server", server, *args, home=home, env=env)
        err = r.stderr.decode()
        assert r.returncode == 2 and want in err and "Traceback" not in err, (args, err)
    r = pushagent("send", "--expose-priority", "--server", server, "alerts", "hi", home=home)
    assert r.returncode == 2 and "--expose-priority: only with --encrypt" in r.stderr.decode()
