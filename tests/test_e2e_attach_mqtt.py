"""``pushagent send --server mqtt://... --encrypt TOPIC --attach FILE`` (issue 15: "attachments
of encrypted messages are encrypted before upload with a per-file key carried inside the
encrypted envelope"). Real mosquitto, a real relay as ``[attachments] upload_server``, a real
receiving agent.

* the upload server's files and database hold neither the file's bytes, nor its name, nor the
  MQTT topic; its copy is ciphertext under a neutral name;
* the MQTT payload (and mosquitto's persistence file, which holds it: a persistent offline
  session has it queued) carries no attachment object outside and neither name nor plaintext;
* the agent holding the topic's key keeps the decrypted file (same bytes, original name) in
  its cache;
* a topic without a key uploads nothing.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from agent.e2e import files as e2e_files
from agent.e2e import jwe
from tests.helpers import pushagent, wait_for
from tests.mosquitto import Mosquitto
from tests.mqtt_helpers import Agent
from tests.relay import Relay
from tests.test_desktop_sequence import png
from tests.test_e2e_attachments import downloads
from tests.test_e2e_processes import files_bytes, keyring_env, shown_ids
from tests.test_relay_bridge import observer, payloads


def offline_session(broker: Mosquitto, topic: str, client_id: str) -> None:
    """A persistent QoS 1 session that subscribes and goes away: mosquitto queues what
    follows for it, so its persistence file holds the message when the broker stops."""
    out = broker.dir / f"{client_id}.log"
    with observer(broker, topic, out, client_id):
        pass
    assert b"SUBACK" in out.read_bytes()


def test_send_encrypt_attach_over_mqtt_uploads_only_ciphertext(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    relay = Relay(tmp_path / "relay").start()
    marker = uuid.uuid4().hex
    topic = f"cam/{marker[:10]}"
    hs, hr = tmp_path / "sender", tmp_path / "receiver"
    hs.mkdir()
    hr.mkdir()
    es, er = keyring_env(tmp_path, "s"), keyring_env(tmp_path, "r")
    (hs / "config.toml").write_text(f'[attachments]\nupload_server = "{relay.url}"\n')
    original = png() + b"secret-photo-" + marker.encode() + os.urandom(3000)
    name = f"photo-{marker[10:20]}.png"
    (tmp_path / name).write_bytes(original)
    agent = None
    try:
        assert pushagent("key", "new", topic, home=hs, env=es).returncode == 0
        exported = pushagent("key", "export", topic, home=hs, env=es).stdout.decode().strip()
        assert pushagent("key", "import", topic, exported, home=hr, env=er).returncode == 0
        # a topic without a key: refused before anything is uploaded ([held] below is one)
        nokey = pushagent("send", "--server", mosquitto.url, "--encrypt", "cam/other", "x",
                          "--attach", str(tmp_path / name), home=hs, env=es)  # fmt: skip
        assert nokey.returncode == 2 and "--encrypt: no key for" in nokey.stderr.decode()
        agent = Agent(hr, mosquitto.url, "--topic", "cam/#", env=er).start()
        offline_session(mosquitto, topic, "e2e-offline-witness")
        out = tmp_path / "observed.log"
        with observer(mosquitto, topic, out, "e2e-observer"):
            sent = pushagent("send", "--server", mosquitto.url, "--encrypt", topic, "Photo",
                             "--attach", str(tmp_path / name), home=hs, env=es)  # fmt: skip
            assert sent.returncode == 0, sent.stderr
            mid = sent.stdout.decode().strip()
            [payload] = wait_for(lambda: payloads(out), timeout=15, what="the MQTT message")

        # the MQTT message: routing outside, everything about the file inside the JWE
        assert payload["id"] == mid and payload["encoding"] == "jwe"
        assert jwe.looks_like(str(payload["message"])) and "attachment" not in payload
        raw = out.read_bytes()
        assert name.encode() not in raw and b"secret-photo" not in raw

        # the receiving agent: the file decrypted, the original bytes and name
        wait_for(lambda: (downloads(hr).get(mid) or (None,))[0] is not None, timeout=30,
                 what=f"the agent downloaded the file\n{agent.log()[-2000:]}")  # fmt: skip
        kept = Path(str(downloads(hr)[mid][0]))
        assert kept.read_bytes() == original and kept.parent == hr / "cache" / "attachments"
        got = shown_ids(agent)[mid]
        assert got["message"] == "Photo" and got["state"] == "received"
        att = got["attachment"]
        assert isinstance(att, dict)
        assert (att["name"], att["type"], att["size"]) == (name, "image/png", len(original))

        # the upload server: ciphertext under a neutral name, no topic in its text
        [held] = relay.poll("pushagent-files")
        assert held["attachment"]["name"] == e2e_files.UPLOAD_NAME
        assert held["attachment"]["type"] == "application/octet-stream"
        assert held["attachment"]["size"] == len(original) + e2e_files.OVERHEAD
        assert topic not in held["message"] and name not in held["message"]
        uploads = [p for p in (tmp_path / "relay").rglob("*") if p.is_file()
                   and p.stat().st_size == len(original) + e2e_files.OVERHEAD]  # fmt: skip
        assert uploads, "the search below must cover the relay's copy of the file"
        stored = files_bytes(tmp_path / "relay")
        assert marker.encode() not in stored and original[-64:] not in stored
        assert name.encode() not in stored and topic.encode() not in stored

        # mosquitto's persistence: the queued ciphertext, never the name or the file
        mosquitto.stop()  # SIGTERM: mosquitto writes its persistence file
        persisted = (mosquitto.dir / "mosquitto.db").read_bytes()
        assert str(payload["message"]).encode() in persisted
        assert name.encode() not in persisted and marker.encode() not in persisted
    finally:
        if agent is not None and agent.proc is not None and agent.proc.poll() is None:
            agent.stop(timeout=15)
        relay.stop()
