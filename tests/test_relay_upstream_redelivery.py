"""The relay's upstream bridge has the agent's ``redelivery`` setting: ``[upstream] redelivery =
"auto" | "trusted" | "untrusted"`` (docs/MQTT.md, *Brokers*).

It decides whether an id-less message from the broker is recorded under its packet id and
digest (``mqtt_redelivery`` in the relay's store), which is what lets a resend after a crash
be recognised: recorded where the packet ids are trusted, never where they are not. With
``auto``, mosquitto (MQTT 5) is trusted and NATS (3.1.1) is not; the key overrides both.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest

from tests.brokers import Client311, Nats
from tests.helpers import wait_for
from tests.mosquitto import Mosquitto
from tests.relay import FAST, Relay


def _records(relay: Relay) -> int:
    conn = sqlite3.connect(relay.dir / "data" / "relay.db", timeout=10)
    try:
        return int(conn.execute("SELECT count(*) FROM mqtt_redelivery").fetchone()[0])
    finally:
        conn.close()


def _plain_text_down(port: int, tmp_path: Path, name: str, setting: str | None) -> int:
    """Start a relay bridged to the broker on ``port`` (``[upstream] redelivery = setting``,
    or nothing), publish one plain-text message down, return the redelivery records kept."""
    t = f"t{uuid.uuid4().hex[:10]}"
    table = f'[upstream]\nurl = "mqtt://127.0.0.1:{port}"\ntopics = ["{t}/#"]\n'
    if setting is not None:
        table += f'redelivery = "{setting}"\n'
    relay = Relay(tmp_path / name, config=FAST + table).start()
    pub = None
    try:
        wait_for(lambda: relay.request("GET", "/v1/health")[1]["upstream"]["state"]
                 == "connected", timeout=30, what=f"upstream connected ({relay.log})")  # fmt: skip
        pub = Client311(port, f"pub-{t}")
        pub.publish(f"{t}/lamp", b"ON")
        got = wait_for(lambda: relay.poll(f"{t}-lamp"), timeout=20, what="the message down")
        assert [m["message"] for m in got] == ["ON"]
        return _records(relay)
    finally:
        if pub is not None:
            pub.close()
        assert relay.stop() == 0


def test_untrusted_overrides_a_broker_auto_trusts(mosquitto: Mosquitto, tmp_path: Path) -> None:
    assert _plain_text_down(mosquitto.port, tmp_path, "auto", None) == 1  # MQTT 5: trusted
    assert _plain_text_down(mosquitto.port, tmp_path, "untrusted", "untrusted") == 0


def test_trusted_overrides_a_broker_auto_does_not_trust(nats: Nats, tmp_path: Path) -> None:
    assert _plain_text_down(nats.port, tmp_path, "auto", None) == 0  # 3.1.1: untrusted
    assert _plain_text_down(nats.port, tmp_path, "trusted", "trusted") == 1


def test_a_bad_value_names_the_key(tmp_path: Path) -> None:
    bad = Relay(tmp_path / "bad", config=FAST + '[upstream]\nurl = "mqtt://127.0.0.1:1"\n'
                'redelivery = "sometimes"\n')  # fmt: skip
    with pytest.raises(AssertionError, match="exited"):
        bad.start()
    assert (
        '\'upstream.redelivery\' must be "auto", "trusted" or "untrusted", not \'sometimes\''
        in bad.log.read_text()
    )
