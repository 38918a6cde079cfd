"""``pushagent send --attach FILE|URL [--filename NAME]`` over HTTP to a real relay (issue 14):
the file arrives byte for byte under its name, the text stays the message, a URL is ntfy's
``Attach``; a file that cannot be read, and ``--attach`` over MQTT, are one-line errors."""

from __future__ import annotations

import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import pushagent
from tests.relay import Relay, module_relay, unique_topic


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    yield from module_relay(tmp_path_factory, "send_attach")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def _lines(r: subprocess.CompletedProcess[bytes]) -> tuple[str, str]:
    return r.stdout.decode().strip(), r.stderr.decode().strip()


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=15) as r:
        return bytes(r.read())


def test_send_attach_file_uploads_it_with_the_message(relay: Relay, home: Path) -> None:
    topic, data = unique_topic("attach"), b"%PDF-1.4\n" + os.urandom(300_000)
    report = home / "report.pdf"
    report.write_bytes(data)
    r = pushagent("send", "--server", relay.url, topic, "Größe: März\nline 2", "--attach",
                  str(report), "--title", "Report", home=home)  # fmt: skip
    out, err = _lines(r)
    assert r.returncode == 0 and err == "", err
    [msg] = relay.poll(topic)
    assert out == msg["id"]
    assert (msg["message"], msg["title"]) == ("Größe: März\nline 2", "Report")
    att = msg["attachment"]
    assert (att["name"], att["type"], att["size"]) == ("report.pdf", "application/pdf", len(data))
    assert _download(att["url"]) == data


def test_send_attach_with_filename_and_no_message(relay: Relay, home: Path) -> None:
    topic = unique_topic("attach")
    snap = home / "x"
    snap.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    r = pushagent("send", "--server", relay.url, topic, "--attach", str(snap), "--filename",
                  "door.png", home=home)  # fmt: skip
    assert r.returncode == 0, r.stderr
    [msg] = relay.poll(topic)
    assert msg["message"] == "You received a file: door.png"
    assert msg["attachment"]["name"] == "door.png" and msg["attachment"]["type"] == "image/png"


def test_send_attach_url_is_an_external_attachment(relay: Relay, home: Path) -> None:
    topic = unique_topic("attach")
    r = pushagent("send", "--server", relay.url, topic, "see", "--attach",
                  "https://cam.example/snap.jpg", home=home)  # fmt: skip
    assert r.returncode == 0, r.stderr
    [msg] = relay.poll(topic)
    assert msg["attachment"] == {"name": "snap.jpg", "url": "https://cam.example/snap.jpg"}


def test_send_attach_url_without_a_message_is_ntfys_file_message(relay: Relay, home: Path) -> None:
    """``send TOPIC --attach URL`` with no MESSAGE: over MQTT, and with a FILE, the text is
    "You received a file: NAME"; over HTTP it stopped with "MESSAGE: missing". Encrypted
    too (the name and the text inside the JWE)."""
    from agent.e2e import jwe, keys

    topic, link = unique_topic("attach"), "https://cam.example/snap.jpg"
    r = pushagent("send", "--server", relay.url, topic, "--attach", link, home=home)
    assert r.returncode == 0, r.stderr
    [msg] = relay.poll(topic)
    assert msg["message"] == "You received a file: snap.jpg"
    assert msg["attachment"] == {"name": "snap.jpg", "url": link}
    e = {"PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}
    assert pushagent("key", "new", topic, home=home, env=e).returncode == 0
    r = pushagent("send", "--encrypt", "--server", relay.url, topic, "--attach", link,
                  home=home, env=e)  # fmt: skip
    assert r.returncode == 0, r.stderr
    key = keys.parse(pushagent("key", "export", topic, home=home, env=e).stdout.decode())
    sealed = relay.poll(topic)[-1]
    inside = jwe.decrypt(sealed["message"], {keys.kid_of(key): key})
    assert inside["message"] == "You received a file: snap.jpg", inside
    assert inside["attachment"] == {"name": "snap.jpg", "url": link}


def test_send_attach_errors_are_one_line(relay: Relay, home: Path) -> None:
    missing = pushagent("send", "--server", relay.url, "t1", "x", "--attach",
                        str(home / "nope.bin"), home=home)  # fmt: skip
    _, err = _lines(missing)
    assert missing.returncode != 0 and len(err.splitlines()) == 1
    assert "--attach" in err and "nope.bin" in err and "Traceback" not in err
    mqtt = pushagent("send", "--server", "mqtt://127.0.0.1:1", "t1", "x", "--attach",
                     str(home), home=home)  # fmt: skip
    _, err = _lines(mqtt)
    assert mqtt.returncode != 0 and "--attach" in err and len(err.splitlines()) == 1
