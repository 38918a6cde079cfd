"""A notifier that fails on a message does not stop the agent.

The hand-off used to let any exception out of ``notifier.show()`` end the agent, and the
same message, never marked handed over, ended it again at every start: a crash loop on one
message (found with an icon URL the desktop notifier could not parse, fixed there; this is
the general rule). The failure here is real: ``--notifier log`` writing to ``/dev/full``,
where every write fails with ENOSPC, as a log pipe on a full disk does.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import child_env, wait_for
from tests.mosquitto import Mosquitto
from tests.mqtt_helpers import Publisher, envelope, stored_ids


def test_a_notifier_that_fails_ends_neither_the_agent_nor_its_next_start(
    mosquitto: Mosquitto, home: Path
) -> None:
    cmd = [sys.executable, "-m", "agent", "run", "--server", mosquitto.url, "--topic", "t/#",
           "--notifier", "log"]  # fmt: skip
    err = home / "agent.log"

    def start() -> subprocess.Popen[bytes]:
        with open("/dev/full", "wb") as full, err.open("ab") as log:
            return subprocess.Popen(cmd, env=child_env(home), stdout=full, stderr=log)

    agent = start()
    try:
        wait_for(lambda: "connected as" in err.read_text(), timeout=30, what="agent connected")
        with Publisher(mosquitto.port) as pub:
            pub.publish("t/a", [envelope(i) for i in range(3)])
            wait_for(lambda: len(stored_ids(home)) == 3, timeout=20, what="3 stored")
            wait_for(lambda: "the notifier failed" in err.read_text(), timeout=10,
                     what=f"the failure logged ({err.read_text()[-2000:]})")  # fmt: skip
            assert agent.poll() is None, err.read_text()[-3000:]
            pub.publish("t/a", [envelope(i) for i in range(3, 6)])  # later ones still come
            wait_for(lambda: len(stored_ids(home)) == 6, timeout=20, what="6 stored")
        assert agent.poll() is None, err.read_text()[-3000:]
        agent.terminate()
        assert agent.wait(timeout=10) == 0
        agent = start()  # nothing left to hand over again: the next start stays up too
        wait_for(lambda: err.read_text().count("connected as") >= 2, timeout=30,
                 what="second start connected")  # fmt: skip
        assert agent.poll() is None, err.read_text()[-3000:]
    finally:
        if agent.poll() is None:
            agent.terminate()
            agent.wait(timeout=10)
    assert sorted(stored_ids(home)) == [f"m{i:05d}" for i in range(6)]
    text = err.read_text()
    assert "Traceback" not in text.split("the notifier failed")[0]
    assert "No space left on device" in text
