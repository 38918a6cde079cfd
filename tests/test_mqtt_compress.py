"""The MQTT payload codec (``[mqtt] compress = "zstd"``, issue 14) against a real mosquitto:
``pushagent send`` publishes a zstd frame flagged by its magic (3.1.1) and, under MQTT 5, the
content type and a user property; a real agent with its default ``compress = "none"``
inflates what it receives; a zip bomb is one rejected message, never a 50 MB allocation;
short payloads go as they are."""

from __future__ import annotations

import json
import queue
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import zstandard
from paho.mqtt.enums import CallbackAPIVersion

from agent.errors import MessageError
from agent.transports import mqtt_codec
from tests.helpers import pushagent, wait_for
from tests.mosquitto import Mosquitto
from tests.mqtt_helpers import Agent, Publisher, stored_ids

LONG = "disk /dev/sda1 on web-03 is 91% full; " * 80  # ~3 KB: compressed


@contextmanager
def watcher(broker: Mosquitto, topic: str) -> Iterator[queue.Queue[paho.MQTTMessage]]:
    """A paho MQTT 5 subscriber: every PUBLISH it gets (payload and properties)."""
    got: queue.Queue[paho.MQTTMessage] = queue.Queue()
    subscribed = queue.Queue[bool]()
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.on_message = lambda c, u, m: got.put(m)
    client.on_subscribe = lambda *a: subscribed.put(True)
    client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        subscribed.get(timeout=10)
        yield got
    finally:
        client.disconnect()
        client.loop_stop()


def messages(home: Path) -> dict[str, str]:
    with sqlite3.connect(home / "data" / "pushagent.db") as db:
        return dict(db.execute("SELECT id, message FROM messages").fetchall())


def rejected(home: Path) -> list[str]:
    with sqlite3.connect(home / "data" / "pushagent.db") as db:
        return [r[0] for r in db.execute("SELECT reason FROM rejected ORDER BY seq")]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_send_compresses_and_flags_it_and_a_default_agent_inflates_it(
    mosquitto: Mosquitto, tmp_path: Path, protocol: str
) -> None:
    (tmp_path / "agent").mkdir()
    agent = Agent(tmp_path / "agent", mosquitto.url).start()
    sender = tmp_path / "sender"
    sender.mkdir()
    (sender / "config.toml").write_text('[mqtt]\ncompress = "zstd"\n')
    try:
        with watcher(mosquitto, "t/disk") as got:
            for text in (LONG, "short"):
                r = pushagent("send", "--server", mosquitto.url, "--mqtt-protocol", protocol,
                              "t/disk", text, home=sender)  # fmt: skip
                assert r.returncode == 0, r.stderr
            long_pub, short_pub = got.get(timeout=10), got.get(timeout=10)
        assert long_pub.payload.startswith(mqtt_codec.MAGIC)
        assert len(long_pub.payload) * 5 < len(LONG), "a ~3 KB notice shrinks > 5x"
        assert (
            json.loads(zstandard.ZstdDecompressor().decompress(long_pub.payload))["message"] == LONG
        )
        props = getattr(long_pub.properties, "ContentType", None), getattr(
            long_pub.properties, "UserProperty", None)  # fmt: skip
        if protocol == "5":
            assert props == ("application/zstd", [("content-encoding", "zstd")])
        else:  # 3.1.1 has no properties: the magic prefix is the flag
            assert props == (None, None)
        assert json.loads(short_pub.payload)["message"] == "short", "short payloads go plain"
        wait_for(lambda: len(stored_ids(agent.home)) == 2, timeout=15, what="both stored")
        assert sorted(messages(agent.home).values()) == sorted([LONG, "short"])
    finally:
        agent.stop()


def test_a_zip_bomb_is_one_rejected_message_and_the_next_arrives(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    (tmp_path / "agent").mkdir()
    agent = Agent(tmp_path / "agent", mosquitto.url).start()
    bomb_body = json.dumps({"id": "bomb1", "message": "x" * 50_000_000}).encode()
    bomb = zstandard.ZstdCompressor(level=3).compress(bomb_body)
    unsized = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    hidden = unsized.compress(bomb_body) + unsized.flush()  # no size in its header
    good = zstandard.ZstdCompressor().compress(json.dumps({"id": "ok1", "message": LONG}).encode())
    try:
        with Publisher(mosquitto.port) as pub:
            pub.publish("t/x", [bomb, hidden, mqtt_codec.MAGIC + b"garbage", good])
        wait_for(lambda: "ok1" in stored_ids(agent.home), timeout=15, what="the good one")
        assert messages(agent.home) == {"ok1": LONG}
        reasons = rejected(agent.home)
        assert len(reasons) == 3, reasons
        assert "declares 50000030 bytes" in reasons[0] and "inflates above" in reasons[1]
        assert "not a valid zstd frame" in reasons[2]
        assert agent.proc is not None and agent.proc.poll() is None
    finally:
        agent.stop()


def test_pack_leaves_short_or_incompressible_payloads_and_unpack_caps() -> None:
    assert mqtt_codec.pack(b"x" * 100, "zstd") == b"x" * 100
    assert mqtt_codec.pack(b"x" * 5000, "none") == b"x" * 5000
    noise = bytes(range(256)) * 2 + b"\x00"
    import os

    rnd = os.urandom(4000)
    assert mqtt_codec.pack(rnd, "zstd") == rnd, "a frame that is not smaller is not used"
    packed = mqtt_codec.pack(noise * 20, "zstd")
    assert packed.startswith(mqtt_codec.MAGIC) and mqtt_codec.unpack(packed, 20_000) == noise * 20
    with pytest.raises(MessageError, match="above 100"):
        mqtt_codec.unpack(packed, 100)
    assert mqtt_codec.unpack(b'{"message":"plain"}', 5) == b'{"message":"plain"}'
    props: Any = mqtt_codec.properties(packed)
    assert props.ContentType == "application/zstd"
    assert mqtt_codec.properties(b"{}") is None
