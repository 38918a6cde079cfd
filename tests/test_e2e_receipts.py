"""Receipts of encrypted messages carry only ids and states (issue 15's contract).

Real processes: a relay with token auth, an agent logged in with a token that holds the
topic's key, ``pushagent send --encrypt``. The agent's receipt POSTs pass through a
recording proxy: each item of the encrypted message is exactly ``{id, state, device, time}``
(no ``device_name``: by default the host name) and no request the agent made holds the title,
the text or the device's name; the relay's receipts table has the id and state and its files
hold none of them. A clear message's receipts afterwards still carry the device's name.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

from tests.helpers import child_env, pushagent, wait_for
from tests.mqtt_helpers import Agent
from tests.netproxy import NetProxy
from tests.relay_proc import RelayProc
from tests.test_e2e_processes import files_bytes, keyring_env, shown_ids


def test_receipts_of_an_encrypted_message_hold_only_ids_and_states(tmp_path: Path) -> None:
    auth = tmp_path / "auth.json"
    made = subprocess.run(
        [sys.executable, "-m", "edge_relay", "token", "--auth-file", str(auth), "add", "laptop",
         "--read", "alerts", "--write", "alerts"],
        env=child_env(), capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    token = made.stdout.decode().strip()
    relay = RelayProc(tmp_path / "relay", extra_args=["--auth-file", str(auth)]).start()
    home, env = tmp_path / "a", keyring_env(tmp_path, "a")
    secret, title = "door-" + uuid.uuid4().hex, "hall-" + uuid.uuid4().hex
    device_name = "nas-" + uuid.uuid4().hex[:12]
    home.mkdir()
    (home / "config.toml").write_text(f'device_name = "{device_name}"\n')
    agent = None
    with NetProxy("127.0.0.1", relay.port, record=True) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"
        try:
            for server in (url, relay.url):  # the agent through the proxy; send direct
                login = pushagent("login", server, "--token-stdin", home=home, env=env,
                                  input=token.encode() + b"\n")  # fmt: skip
                assert login.returncode == 0, login.stderr
            assert pushagent("key", "new", "alerts", home=home, env=env).returncode == 0
            agent = Agent(home, url, "--topic", "alerts", env=env).start()
            sent = pushagent("send", "--encrypt", "--server", relay.url, "alerts", secret,
                             "--title", title, home=home, env=env)  # fmt: skip
            assert sent.returncode == 0, sent.stderr
            mid = sent.stdout.decode().strip()
            wait_for(lambda: mid in shown_ids(agent), timeout=30, what="the agent showed it")  # type: ignore[arg-type]
            assert shown_ids(agent)[mid]["message"] == secret  # decrypted: it knew the text

            def receipts(of: str) -> list[dict[str, object]]:
                where = f"{relay.url}/v1/messages/{of}/receipts"
                req = urllib.request.Request(where, headers={"Authorization": f"Bearer {token}"})
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return list(json.loads(resp.read())["receipts"])

            wait_for(lambda: {"delivered", "displayed"} <= {r["state"] for r in receipts(mid)},
                     timeout=30, what="the delivered and displayed receipts")  # fmt: skip
            assert not any("device_name" in r for r in receipts(mid))
            encrypted_wire = bytes(proxy.sent)
            relay_data = files_bytes(tmp_path / "relay" / "data")
            with sqlite3.connect(tmp_path / "relay" / "data" / "relay.db") as conn:
                rows = conn.execute("SELECT * FROM receipts").fetchall()

            # then a clear message: its receipts keep the device's name (issue 16)
            plain = pushagent("send", "--server", relay.url, "alerts", "plain", home=home, env=env)
            assert plain.returncode == 0, plain.stderr
            cid = plain.stdout.decode().strip()
            wait_for(lambda: any(r.get("device_name") == device_name for r in receipts(cid)),
                     timeout=30, what="the clear message's receipt, named")  # fmt: skip
        finally:
            if agent is not None:
                agent.stop()
            relay.stop()
        wire = bytes(proxy.sent)
    assert b"POST /v1/receipts" in encrypted_wire
    items = [i for body in re.findall(rb"\[\{.*?\}\]", wire) for i in json.loads(body)]
    assert items and {i["id"] for i in items} == {mid, cid}
    # ids and states, with the device's opaque id and the state's time (docs/E2E.md):
    # nothing of the message, and not the name of the device
    mine = [i for i in items if i["id"] == mid]
    assert {i["state"] for i in mine} >= {"delivered", "displayed"}
    assert all(set(i) == {"id", "state", "device", "time"} for i in mine), mine
    assert all(set(i) == {"id", "state", "device", "device_name", "time"}
               for i in items if i["id"] == cid)  # fmt: skip
    assert secret.encode() not in wire and title.encode() not in wire
    assert device_name.encode() not in encrypted_wire
    assert rows and all(r[0] == mid for r in rows)
    assert not any(v is not None and (secret in str(v) or title in str(v) or
                   device_name in str(v)) for r in rows for v in r)  # fmt: skip
    assert secret.encode() not in relay_data and title.encode() not in relay_data
    assert device_name.encode() not in relay_data
