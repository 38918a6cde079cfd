"""End to end: mosquitto → ``pushagent run --notifier desktop`` → dunst → user action →
receipt on the broker's receipt topic: each receipt exactly once."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest

from tests.desktop import Desktop
from tests.helpers import child_env, spawn, wait_for
from tests.mosquitto import Mosquitto

pytestmark = pytest.mark.desktop


class Receipts:
    """A paho subscriber on edgepush/receipts/# collecting decoded receipts."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.got: list[dict[str, object]] = []
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_for(self.client.is_connected, what="receipt subscriber connected")
        self.client.subscribe("edgepush/receipts/#", qos=1)

    def _on_message(self, c: object, u: object, msg: object) -> None:
        with self._lock:
            self.got.append(json.loads(msg.payload))  # type: ignore[attr-defined]

    def states(self, message_id: str) -> list[object]:
        """Every receipt state received for ``message_id``, in arrival order, repeats kept."""
        with self._lock:
            return [r["state"] for r in self.got if r["id"] == message_id]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish(broker: Mosquitto, topic: str, body: dict[str, object]) -> None:
    subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t", topic,
         "-m", json.dumps(body)],
        check=True, timeout=20,
    )  # fmt: skip


def test_click_and_dismiss_reach_the_receipt_topic(
    desktop: Desktop, mosquitto: Mosquitto, home: Path, tmp_path: Path
) -> None:
    opened = tmp_path / "opened.txt"
    (home / "config.toml").write_text(
        f'servers = ["{mosquitto.url}"]\ntopics = ["home/#"]\nnotifier = "desktop"\n'
        f'[desktop]\nopener = ["sh", "-c", \'echo "$0" >> {opened}\']\n'
    )
    receipts = Receipts(mosquitto.port)
    with (tmp_path / "agent.log").open("wb") as log:
        agent = spawn("agent", ["run"], env={**child_env(home), **desktop.env}, stderr=log)
    try:
        # "connected" is written after the SUBACK: from then on nothing published is missed
        wait_for(lambda: _connected(home), timeout=30, what="agent connected and subscribed")
        door = {"id": "e2eclick", "title": "Door", "message": "opened", "priority": 4,
                "click": "https://example.org/door"}  # fmt: skip
        publish(mosquitto, "home/door", door)
        wait_for(lambda: desktop.count("displayed") == 1, timeout=30, what="on screen")
        desktop.screenshot(tmp_path / "notification.png")
        desktop.dunstctl("action", "0")
        wait_for(lambda: "clicked" in receipts.states("e2eclick"), timeout=30, what="clicked")
        desktop.dunstctl("close-all")
        publish(mosquitto, "home/bell", {"id": "e2eclose", "message": "ding"})
        wait_for(lambda: "displayed" in receipts.states("e2eclose"), timeout=30)
        wait_for(lambda: desktop.count("displayed") == 1, timeout=30, what="2nd on screen")
        desktop.dunstctl("close")
        wait_for(lambda: "dismissed" in receipts.states("e2eclose"), timeout=30)
    finally:
        agent.terminate()
        agent.wait(20)
        if agent.stdout is not None:
            agent.stdout.close()
    try:
        # The agent has exited, so whatever it published reached the broker before this
        # marker: once the marker is here, a duplicate receipt would be here too.
        publish(mosquitto, "edgepush/receipts/test", {"id": "marker", "state": "end"})
        wait_for(lambda: receipts.states("marker"), timeout=30, what="receipt marker")
    finally:
        receipts.close()
    assert receipts.states("e2eclick") == ["delivered", "displayed", "clicked"]
    assert receipts.states("e2eclose") == ["delivered", "displayed", "dismissed"]
    assert sorted({str(r["id"]) for r in receipts.got}) == ["e2eclick", "e2eclose", "marker"]
    assert opened.read_text() == "https://example.org/door\n"
    hist = subprocess.run(
        [*_agent(), "history", "--json"], env=child_env(home), capture_output=True, check=True
    )
    states = sorted((m["id"], m["state"]) for m in json.loads(hist.stdout))
    assert states == [("e2eclick", "clicked"), ("e2eclose", "dismissed")]


def _connected(home: Path) -> bool:
    try:
        return json.loads((home / "data" / "status.json").read_text())["state"] == "connected"
    except (OSError, ValueError, KeyError):
        return False


def _agent() -> list[str]:
    import sys

    return [sys.executable, "-m", "agent"]
