"""The tray counts encrypted messages it cannot read (issue 15: "shown as 'encrypted message
on alerts'"): real relay, a real agent without the key, ``pushagent send --encrypt`` from a
device with it, then the real tray menu (tests/tray_probe under Xvfb) on the agent's store.

The message is unread until marked read -- its state stays ``undecryptable`` (the key
import still decrypts it), the local ``read`` receipt is what marks it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from agent.store import Store
from agent.tray import history
from tests.desktop import Desktop
from tests.helpers import child_env, pushagent, wait_for
from tests.mqtt_helpers import Agent
from tests.relay_proc import RelayProc
from tests.test_e2e_processes import keyring_env, shown_ids


def _menus(home: Path, desktop: Desktop, env: dict[str, str], *actions: str) -> list[list[str]]:
    r = subprocess.run(
        [sys.executable, "-m", "tests.tray_probe", *actions],
        env={**child_env(home), **env, **desktop.env}, capture_output=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    return [[e["label"] for e in json.loads(line)] for line in r.stdout.splitlines()]


def test_tray_counts_and_lists_undecryptable_messages(tmp_path: Path, desktop: Desktop) -> None:
    relay = RelayProc(tmp_path / "relay").start()
    ha, hb = tmp_path / "a", tmp_path / "b"
    ea, eb = keyring_env(tmp_path, "a"), keyring_env(tmp_path, "b")
    hb.mkdir()
    secret = "door-" + uuid.uuid4().hex
    b = None
    try:
        assert pushagent("key", "new", "alerts", home=ha, env=ea).returncode == 0
        b = Agent(hb, relay.url, "--topic", "alerts", env=eb).start()
        clear = pushagent("send", "--server", relay.url, "alerts", "in clear", home=ha, env=ea)
        sent = pushagent("send", "--encrypt", "--server", relay.url, "alerts", secret,
                         "--title", "Hall", home=ha, env=ea)  # fmt: skip
        assert clear.returncode == 0 and sent.returncode == 0, sent.stderr
        mid = sent.stdout.decode().strip()
        wait_for(lambda: mid in shown_ids(b), timeout=30, what="B showed it")  # type: ignore[arg-type]
        assert shown_ids(b)[mid]["state"] == "undecryptable"
    finally:
        if b is not None:
            b.stop()
        relay.stop()

    with Store(hb / "data" / "pushagent.db").open() as store:
        window = history.lines(store)
    assert window[-1].endswith("alerts  [undecryptable]  encrypted message on alerts")
    assert secret not in "".join(window)

    menus = _menus(hb, desktop, eb, "read-all")
    assert menus[0][0] == "edgepush: disconnected, 2 unread"
    assert menus[0][1:3] == ["● alerts: encrypted message on alerts", "● alerts: in clear"]
    assert menus[1][0] == "edgepush: disconnected"
    assert menus[1][1] == "alerts: encrypted message on alerts"
    with Store(hb / "data" / "pushagent.db").open() as store:
        row = store.get(mid)
        assert row is not None and row.state == "undecryptable"  # read, still to decrypt

    exported = pushagent("key", "export", "alerts", home=ha, env=ea).stdout.decode().strip()
    imp = pushagent("key", "import", "alerts", exported, home=hb, env=eb)
    assert imp.returncode == 0 and "decrypted 1 stored message(s)" in imp.stderr.decode()
    with Store(hb / "data" / "pushagent.db").open() as store:
        row = store.get(mid)
        assert row is not None and (row.message.message, row.state) == (secret, "received")
