"""``tls.insecure = true`` over WebSocket/HTTPS says so on every connect, as over MQTT.

A real TLS relay (trustme certificate the agent does not trust): the agent connects only
because checks are off, and each connection — the first, and the one after the relay
restarted — logs exactly one WARNING; the receipts' HTTPS POSTs add none.
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from pathlib import Path
from typing import Any

import trustme

from tests.helpers import wait_for
from tests.relay_proc import AgentProc, RelayProc

WARNING = "TLS certificate checks are OFF (tls.insecure = true)"


def _tls_relay(tmp_path: Path) -> RelayProc:
    cert = trustme.CA().issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    tls = ["--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem")]
    return RelayProc(tmp_path / "relay", keepalive=2, extra_args=tls)


def _https(url: str, body: bytes | None = None) -> Any:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(url, data=body, method="POST" if body else "GET")
    with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
        return json.loads(resp.read())


def test_insecure_tls_warns_on_each_websocket_connect_and_post(tmp_path: Path) -> None:
    relay = _tls_relay(tmp_path).start()
    url = f"https://127.0.0.1:{relay.port}"
    home = tmp_path / "agent"
    home.mkdir()
    (home / "config.toml").write_text("[tls]\ninsecure = true\n")
    agent = AgentProc(home, ["--server", url, "--topic", "tls1"])
    try:
        agent.start()
        err = home / "agent-1.err"

        def count(text: str) -> int:
            return err.read_text(errors="replace").count(text)

        wait_for(lambda: count("subscribed") == 1, timeout=30, what=f"subscribed\n{agent.stderr()}")
        assert count(WARNING) == 1
        relay.kill()
        relay.start()  # same port: the agent reconnects
        wait_for(lambda: count("subscribed") == 2, timeout=30, what=f"again\n{agent.stderr()}")
        assert count(WARNING) == 2
        assert count(f"WARNING pushagent.ws: {url}: {WARNING}") == 2

        # the receipt goes back by HTTPS POST with the same (unchecked) context: it arrives,
        # and the connect's warning covers it — no line per POST
        mid = _https(f"{url}/tls1", b"over https")["id"]
        receipts = f"{url}/v1/messages/{mid}/receipts"
        # delivered when stored, displayed when the log notifier wrote it out
        wait_for(lambda: sorted(r["state"] for r in _https(receipts)["receipts"])
                 == ["delivered", "displayed"], timeout=30,
                 what="the delivered and displayed receipts over HTTPS")  # fmt: skip
        assert count(WARNING) == 2
    finally:
        agent.stop()
        relay.stop()
