"""``pushagent send --attach FILE`` to an MQTT broker (issue 14): the file goes to the relay
named in ``[attachments] upload_server``; the MQTT message carries only the ``attachment``
object, whose URL serves the file byte for byte. Without ``upload_server``: one clear line."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

from tests.helpers import pushagent, wait_for
from tests.mosquitto import Mosquitto
from tests.relay import Relay
from tests.test_relay_bridge import observer, payloads


def test_send_attach_over_mqtt_uploads_to_upload_server_and_publishes_the_object(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    relay = Relay(tmp_path / "relay").start()
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(f'[attachments]\nupload_server = "{relay.url}"\n')
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(2_000_000)  # 2 MB: never an MQTT payload
    snap = home / "door.png"
    snap.write_bytes(data)
    out = tmp_path / "sub.log"
    try:
        with observer(mosquitto, "home/door", out, "attach-observer"):
            r = pushagent("send", "--server", mosquitto.url, "home/door", "Someone at the door",
                          "--attach", str(snap), home=home)  # fmt: skip
            assert r.returncode == 0, r.stderr
            [msg] = wait_for(lambda: payloads(out), timeout=15, what="the MQTT message")
        assert msg["id"] == r.stdout.decode().strip()
        assert msg["message"] == "Someone at the door" and msg["topic"] == "home/door"
        att = msg["attachment"]
        assert (att["name"], att["type"], att["size"]) == ("door.png", "image/png", len(data))
        assert att["url"].startswith(f"{relay.url}/file/") and att["expires"] > 0
        assert out.stat().st_size < 4096, "the MQTT message carries the object, not the file"
        with urllib.request.urlopen(att["url"], timeout=15) as resp:
            assert resp.read() == data
        [held] = relay.poll("pushagent-files")  # the file's message on the upload topic
        assert held["attachment"]["url"] == att["url"]
    finally:
        relay.stop()


def test_send_attach_file_over_mqtt_without_upload_server_is_one_clear_line(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "x.bin").write_bytes(b"\0" * 100)
    r = pushagent("send", "--server", mosquitto.url, "home/door", "x", "--attach",
                  str(home / "x.bin"), home=home)  # fmt: skip
    err = r.stderr.decode().strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1, err
    assert "upload_server" in err and "--attach" in err and "Traceback" not in err


def test_upload_server_must_be_an_http_url() -> None:
    import pytest

    from agent import config
    from agent.errors import ConfigError

    with pytest.raises(ConfigError, match="upload_server"):
        config.load({"attachments.upload_server": "mqtt://broker"}, env={})
    cfg = config.load({"attachments.upload_server": "https://relay.example:8443"}, env={})
    assert cfg.attachments.upload_server == "https://relay.example:8443"
