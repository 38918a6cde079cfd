"""The upstream bridge against a real mosquitto: cloud → relay → local subscribers, local →
broker through the outbox, and a broker outage while local publishing goes on."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import complete_lines, wait_for
from tests.mosquitto import Mosquitto
from tests.relay import Relay


@contextmanager
def observer(broker: Mosquitto, topic: str, out: Path, client_id: str) -> Iterator[None]:
    """A persistent QoS 1 ``mosquitto_sub`` appending each payload to ``out``; yields once its
    subscription is acknowledged. (stdbuf: line-buffered output, so we can read it live.)"""
    start = out.stat().st_size if out.exists() else 0
    with out.open("ab") as f:
        proc = subprocess.Popen(
            ["stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port),
             "-t", topic, "-q", "1", "-c", "-i", client_id, "-d", "-F", "PAYLOAD %p"],
            stdout=f, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_for(lambda: b"SUBACK" in out.read_bytes()[start:], timeout=15,
                     what="observer SUBACK")  # fmt: skip
            yield
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def payloads(out: Path) -> list[dict[str, Any]]:
    if not out.exists():
        return []
    lines = complete_lines(out.read_bytes())
    return [json.loads(line[8:]) for line in lines if line.startswith(b"PAYLOAD ")]


def health(relay: Relay) -> dict[str, Any]:
    return dict(relay.request("GET", "/v1/health")[1])


async def test_cloud_to_three_local_subscribers_and_local_up_without_echo(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    relay = Relay(tmp_path / "relay", args=["--upstream", mosquitto.url, "--upstream-topic",
                  "cloud/#", "--upstream-topic", "up/#", "--forward", "up*"]).start()  # fmt: skip
    try:
        wait_for(lambda: health(relay)["upstream"]["state"] == "connected", timeout=20,
                 what="upstream connected")  # fmt: skip
        async with aiohttp.ClientSession() as s:
            subs = [await s.get(f"{relay.url}/cloud-alerts/json") for _ in range(3)]
            for r in subs:
                assert json.loads(await r.content.readline())["event"] == "open"
            lines = "\n".join(f"cloud {i}" for i in range(20)) + "\n"
            pub = subprocess.run(
                ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mosquitto.port), "-q", "1",
                 "-t", "cloud/alerts", "-l"], input=lines.encode(), timeout=30, check=True,
            )  # fmt: skip
            assert pub.returncode == 0
            for r in subs:
                got: list[dict[str, Any]] = []
                async with asyncio.timeout(20):
                    while len(got) < 20:
                        ev = json.loads(await r.content.readline())
                        if ev["event"] == "message":
                            got.append(ev)
                assert [e["message"] for e in got] == [f"cloud {i}" for i in range(20)]
                assert len({e["id"] for e in got}) == 20
                r.close()
        assert len(relay.poll("cloud-alerts")) == 20  # stored once

        # local → broker, keeping the id; it comes back down (we subscribe up/#): no echo
        out = tmp_path / "all.out"
        with observer(mosquitto, "#", out, "obs-all"):
            sent = relay.publish("up-door", "opened")
            wait_for(lambda: len(payloads(out)) == 1, timeout=20, what="forwarded message")
            assert payloads(out)[0]["id"] == sent["id"]
            assert payloads(out)[0]["message"] == "opened"
            wait_for(lambda: health(relay)["upstream"]["outbox"] == 0, timeout=10,
                     what="drained")  # fmt: skip
            # The broker acked the forward, so it already routed the echo to the relay's
            # up/# session; a message published to the same topic now is queued behind it.
            # Once that marker is stored, a stored echo would be there too.
            down = {"id": "downmark01", "message": "from the broker"}
            subprocess.run(
                ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mosquitto.port), "-q", "1",
                 "-t", "up/door", "-m", json.dumps(down)], timeout=30, check=True,
            )  # fmt: skip
            wait_for(lambda: len(relay.poll("up-door")) >= 2, timeout=20, what="marker down")
            assert [m["id"] for m in relay.poll("up-door")] == [sent["id"], "downmark01"]
            # Neither that downward message (its local topic matches --forward, but it came
            # from upstream) nor a local publish outside --forward may go up. A forwarded
            # marker published after both leaves the FIFO outbox after anything they queued.
            kept = relay.publish("cloud-door", "stays on the LAN")
            marker = relay.publish("up-mark", "marker")
            wait_for(lambda: marker["id"] in [p["id"] for p in payloads(out)], timeout=20,
                     what="forwarded marker")  # fmt: skip
        assert [p["id"] for p in payloads(out)] == [sent["id"], "downmark01", marker["id"]]
        assert [m["id"] for m in relay.poll("cloud-door")] == [kept["id"]]
        assert [m["id"] for m in relay.poll("up-door")] == [sent["id"], "downmark01"]
    finally:
        assert relay.stop() == 0


@pytest.mark.slow
def test_broker_outage_local_publishing_goes_on_and_is_forwarded_in_order_once(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    relay = Relay(tmp_path / "relay", args=["--upstream", mosquitto.url, "--forward", "out*"])
    relay.start()
    out = tmp_path / "out.out"
    sent: list[str] = []
    try:
        wait_for(lambda: health(relay)["upstream"]["state"] == "connected", timeout=20,
                 what="upstream connected")  # fmt: skip
        db = mosquitto.dir / "mosquitto.db"
        with observer(mosquitto, "out/#", out, "obs-out"):
            subscribed = time.time()
            # The observer's session must be on disk before the SIGKILL (autosave_interval 1).
            wait_for(lambda: db.exists() and db.stat().st_mtime > subscribed + 0.1,
                     timeout=10, what="broker autosave")  # fmt: skip
            sent += [relay.publish("out-x", f"before {i}")["id"] for i in range(10)]
            wait_for(lambda: len(payloads(out)) == 10, timeout=20, what="first 10 forwarded")
        mosquitto.kill()
        outage_end = time.monotonic() + 8
        i = 0
        while time.monotonic() < outage_end:  # local publishing goes on during the outage
            sent.append(relay.publish("out-x", f"during {i}")["id"])
            i += 1
            time.sleep(0.1)  # pacing of the publisher, not a wait for a result
        h = health(relay)
        assert h["upstream"]["state"] != "connected" and h["healthy"] is True
        assert len(relay.poll("out-x")) == len(sent)  # the LAN kept working
        mosquitto.start()
        with observer(mosquitto, "out/#", out, "obs-out"):
            wait_for(lambda: len(payloads(out)) >= len(sent), timeout=45, what="outbox drained")
            wait_for(lambda: health(relay)["upstream"]["outbox"] == 0, timeout=10, what="empty")
        got = [p["id"] for p in payloads(out)]
        assert got == sent, f"{len(got)} forwarded vs {len(sent)} sent"
    finally:
        assert relay.stop() == 0
