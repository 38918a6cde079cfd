"""The broker fixture itself: it must really persist a queued message across a SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import time

from tests.helpers import wait_for
from tests.mosquitto import Mosquitto


def _sub(broker: Mosquitto, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["mosquitto_sub", "-p", str(broker.port), "-h", "127.0.0.1", "-i", "fixture-check",
         "-c", "-q", "1", "-t", "fixture/t", "-W", "3", *extra],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip


def test_queued_qos1_message_survives_broker_sigkill(mosquitto: Mosquitto) -> None:
    # register a persistent session, go offline, publish: the message is queued for it
    assert _sub(mosquitto, "-E").returncode == 0
    subprocess.run(
        ["mosquitto_pub", "-p", str(mosquitto.port), "-h", "127.0.0.1", "-q", "1",
         "-t", "fixture/t", "-m", "kept"],
        check=True, timeout=10,
    )  # fmt: skip
    published = time.time()
    # What the fixture promises (autosave_interval 1): a queued message is on disk within
    # about a second, so a SIGKILL after that loses nothing. A broker that saved only on an
    # orderly stop never gets here.
    db = mosquitto.dir / "mosquitto.db"
    wait_for(lambda: db.exists() and db.stat().st_mtime > published + 0.05, timeout=5,
             what="mosquitto autosaved after the publish")  # fmt: skip
    proc = mosquitto.proc
    assert proc is not None
    mosquitto.kill()
    assert proc.returncode == -signal.SIGKILL  # really killed: no chance to save on the way out
    assert "terminating" not in mosquitto.log.read_text()  # no orderly shutdown was logged
    mosquitto.start()
    got = _sub(mosquitto, "-C", "1")
    assert got.stdout.strip() == "kept", got.stderr
