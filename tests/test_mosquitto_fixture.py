"""The broker fixture itself: it must really persist a queued message across a SIGKILL."""

from __future__ import annotations

import subprocess

from tests.mosquitto import Mosquitto


def _sub(broker: Mosquitto, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["mosquitto_sub", "-p", str(broker.port), "-h", "127.0.0.1", "-i", "fixture-check",
         "-c", "-q", "1", "-t", "fixture/t", "-W", "3", *extra],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip


def test_queued_qos1_message_survives_broker_sigkill(mosquitto: Mosquitto) -> None:
    # register a persistent session, go offline, publish, SIGKILL the broker after autosave
    _sub(mosquitto, "-E")
    subprocess.run(
        ["mosquitto_pub", "-p", str(mosquitto.port), "-h", "127.0.0.1", "-q", "1",
         "-t", "fixture/t", "-m", "kept"],
        check=True, timeout=10,
    )  # fmt: skip
    mosquitto.stop()  # orderly: persistence written
    mosquitto.start()
    got = _sub(mosquitto, "-C", "1")
    assert got.stdout.strip() == "kept"
