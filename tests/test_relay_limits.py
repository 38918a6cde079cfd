"""Limits and transport options against a real relay: publish rate, subscriptions per client,
retention by count, TLS, and an upstream that is down when the relay starts."""

from __future__ import annotations

import json
import ssl
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import trustme

from tests.helpers import free_port, wait_for
from tests.mosquitto import Mosquitto
from tests.relay import FAST, Relay

TIGHT = """keepalive = 0.5
prune_interval = 0.2
[limits]
publish_burst = 5
publish_rate = 0.01
max_subscriptions = 2
retention_count = 3
exempt_hosts = []  # these tests run on loopback, which is exempt by default
"""


async def test_rate_subscription_and_retention_limits(tmp_path: Path) -> None:
    relay = Relay(tmp_path, config=TIGHT).start()
    try:
        codes = [relay.request("PUT", "/lim", f"m{i}".encode())[0] for i in range(7)]
        assert codes == [200] * 5 + [429] * 2
        status, body = relay.request("PUT", "/lim", b"x")
        assert status == 429 and "rate" in body["error"]
        # retention keeps the newest 3 (the prune loop runs every 0.2 s here)
        wait_for(lambda: len(relay.poll("lim")) == 3, timeout=15, what="pruned to 3")
        assert [m["message"] for m in relay.poll("lim")] == ["m2", "m3", "m4"]
        async with aiohttp.ClientSession() as s:
            a = await s.get(f"{relay.url}/lim/json")
            b = await s.get(f"{relay.url}/lim/json")
            c = await s.get(f"{relay.url}/lim/json")
            assert (a.status, b.status, c.status) == (200, 200, 429)
            assert "subscriptions" in (await c.json())["error"]
            for r in (a, b, c):
                r.close()
    finally:
        assert relay.stop() == 0


def test_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    relay = Relay(tmp_path / "r", config=FAST, args=["--tls-cert", str(tmp_path / "cert.pem"),
                  "--tls-key", str(tmp_path / "key.pem")], tls=ctx)  # fmt: skip
    url = relay.url
    relay.start()
    try:
        req = urllib.request.Request(url + "/secure", data=b"over tls", method="PUT")
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            assert json.loads(r.read())["message"] == "over tls"
    finally:
        assert relay.stop() == 0


def test_upstream_down_at_start_lan_works_then_outbox_drains(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mqtt", port=free_port())  # not started yet
    relay = Relay(tmp_path / "relay", args=["--upstream", broker.url, "--forward", "*"]).start()
    try:
        health: Any = relay.request("GET", "/v1/health")[1]
        assert health["upstream"]["state"] in ("connecting", "offline")
        ids = [relay.publish("early", f"m{i}")["id"] for i in range(5)]
        assert [m["id"] for m in relay.poll("early")] == ids  # the LAN works without upstream
        wait_for(lambda: relay.request("GET", "/v1/health")[1]["upstream"]["outbox"] == 5,
                 timeout=10, what="outbox holds 5")  # fmt: skip
        broker.start()
        wait_for(lambda: relay.request("GET", "/v1/health")[1]["upstream"] ==
                 {"url": broker.url, "state": "connected", "outbox": 0, "last_error": None},
                 timeout=30, what="connected and drained")  # fmt: skip
    finally:
        assert relay.stop() == 0
        broker.stop()
