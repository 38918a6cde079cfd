"""Small things a new user notices in the first hour (issue 12): ``status`` says that
notifications are paused and until when; the log notifier's messages count as displayed."""

from __future__ import annotations

import json
import time
from pathlib import Path

from agent.store import Store
from tests.helpers import pushagent, wait_for
from tests.mosquitto import Mosquitto
from tests.mqtt_helpers import Agent


def status_json(home: Path) -> dict[str, object]:
    result = pushagent("status", "--json", home=home)
    assert result.returncode == 3, result.stderr  # no daemon runs: still a full report
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_status_shows_that_notifications_are_paused_and_until_when(home: Path) -> None:
    Store(home / "data" / "pushagent.db").open().close()
    assert status_json(home)["paused_until"] is None
    assert "notifications: shown" in pushagent("status", home=home).stdout.decode()

    before = time.time()
    assert pushagent("pause", "2h", home=home).returncode == 0
    until = status_json(home)["paused_until"]
    assert isinstance(until, float) and before + 7200 <= until <= time.time() + 7200
    text = pushagent("status", home=home).stdout.decode()
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(until))
    assert f"notifications: paused until {stamp} (pushagent resume ends it)" in text, text

    assert pushagent("pause", home=home).returncode == 0  # until resumed
    text = pushagent("status", home=home).stdout.decode()
    assert "notifications: paused until 'pushagent resume'" in text, text

    assert pushagent("resume", home=home).returncode == 0
    assert status_json(home)["paused_until"] is None
    assert "notifications: shown" in pushagent("status", home=home).stdout.decode()


def test_the_log_notifier_records_its_messages_as_displayed(
    home: Path, mosquitto: Mosquitto
) -> None:
    agent = Agent(home, mosquitto.url).start()
    try:
        for n in range(3):
            sent = pushagent("send", "--server", mosquitto.url, "t/x", f"m{n}", "--id",
                             f"shown{n}", home=home)  # fmt: skip
            assert sent.returncode == 0, sent.stderr

        def states() -> dict[str, str]:
            out = pushagent("history", "--json", "--since", "all", home=home)
            return {m["id"]: m["state"] for m in json.loads(out.stdout)}

        wait_for(lambda: states() == dict.fromkeys(("shown0", "shown1", "shown2"), "displayed"),
                 timeout=30, what=f"displayed states ({agent.log()[-1500:]})")  # fmt: skip
        assert agent.notified() == dict.fromkeys(("shown0", "shown1", "shown2"), 1)
    finally:
        assert agent.stop() == 0
