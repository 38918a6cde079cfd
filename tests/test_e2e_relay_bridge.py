"""The same id encrypted and in clear through the relay's upstream bridge (issue 15: "never
merged"). Real mosquitto, a relay bridging ``cloud/#`` from it, an agent behind the relay.

The agent's rule (agent.store.sealed): the first form is kept, the other goes to ``rejected``
with the reason. The relay applies it too: the second copy is not dropped silently by the id
dedupe but kept in its ``rejected`` table and counted in ``/v1/health``; the agent behind it
shows the first form once and never the clear text.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import uuid
from pathlib import Path

from agent.e2e.keys import kid_of, parse
from tests.helpers import pushagent, wait_for
from tests.mosquitto import Mosquitto
from tests.mqtt_helpers import Agent
from tests.relay import Relay
from tests.test_e2e_processes import jose_publisher_payload, keyring_env, shown, shown_ids
from tests.test_relay_bridge import health, observer, payloads


def relay_rejected(relay: Relay) -> list[str]:
    with sqlite3.connect(relay.dir / "data" / "relay.db", timeout=10) as conn:
        return [str(r[0]) for r in conn.execute("SELECT reason FROM rejected ORDER BY seq")]


def test_relay_keeps_the_other_form_of_an_id_aside(mosquitto: Mosquitto, tmp_path: Path) -> None:
    relay = Relay(tmp_path / "relay", args=["--upstream", mosquitto.url, "--upstream-topic",
                  "cloud/#"]).start()  # fmt: skip
    home, env = tmp_path / "a", keyring_env(tmp_path, "a")
    secret = "gate-" + uuid.uuid4().hex
    agent = None
    try:
        wait_for(lambda: health(relay)["upstream"]["state"] == "connected", timeout=20,
                 what="upstream connected")  # fmt: skip
        assert pushagent("key", "new", "cloud-door", home=home, env=env).returncode == 0
        exported = pushagent("key", "export", "cloud-door", home=home, env=env).stdout.decode()
        key = parse(exported.strip())
        agent = Agent(home, relay.url, "--topic", "cloud-door", env=env).start()

        x, y, mark = (f"{p}{uuid.uuid4().hex[:10]}" for p in ("x", "y", "mark"))
        payloads = [
            jose_publisher_payload(key, kid_of(key), x, {"message": secret}),
            json.dumps({"id": x, "message": "Injected in clear"}).encode(),  # after encrypted
            json.dumps({"id": y, "message": "plain first"}).encode(),
            jose_publisher_payload(key, kid_of(key), y, {"message": "sealed second"}),
            json.dumps({"id": mark, "message": "marker"}).encode(),  # after both, same topic
        ]
        for payload in payloads:  # one by one: each its own upstream batch, in order
            subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mosquitto.port),
                            "-q", "1", "-t", "cloud/door", "-m", payload.decode()],
                           timeout=30, check=True)  # fmt: skip
        wait_for(lambda: mark in shown_ids(agent), timeout=30,  # type: ignore[arg-type]
                 what=f"the agent showed the marker\n{agent.log()[-2000:]}")  # fmt: skip

        reasons = relay_rejected(relay)
        assert len(reasons) == 2 and all(r.endswith("not merged") for r in reasons), reasons
        assert reasons[0].startswith(f"id {x} arrived in clear but is encrypted")
        assert reasons[1].startswith(f"id {y} arrived encrypted but is in clear")
        assert health(relay)["rejected"] == 2
        frames = {f["id"]: f for f in relay.poll("cloud-door")}
        assert frames[x]["encoding"] == "jwe" and frames[y]["message"] == "plain first"

        got = shown_ids(agent)
        assert [m["id"] for m in shown(agent)] == [x, y, mark]  # each once, in order
        assert got[x]["message"] == secret and got[y]["message"] == "plain first"
        assert "Injected in clear" not in agent.out.read_text()
        assert "sealed second" not in agent.out.read_text()
    finally:
        if agent is not None and agent.proc is not None and agent.proc.poll() is None:
            agent.stop(timeout=15)
        relay.stop()


def test_the_echo_of_a_scheduled_sealed_message_is_a_no_op(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """An encrypted message published to the relay with a delay, forwarded upstream when it
    is released, comes back down the bridge (the same id, sealed): the usual no-op, not a
    'not merged' rejection (the released copy was stored as clear)."""
    from agent.e2e import seal
    from agent.envelope import from_fields

    relay = Relay(tmp_path / "relay", args=["--upstream", mosquitto.url, "--upstream-topic",
                  "cloud/#", "--forward", "cloud-*"]).start()  # fmt: skip
    out = tmp_path / "up.out"
    try:
        wait_for(lambda: health(relay)["upstream"]["state"] == "connected", timeout=20,
                 what="upstream connected")  # fmt: skip
        key = bytes(range(32))
        token = seal.seal_text(from_fields({"message": "Door opened"}, topic="cloud-door"),
                               key, kid_of(key))  # fmt: skip
        with observer(mosquitto, "cloud/#", out, "obs-sealed"):
            sent = relay.publish("cloud-door", token, **{"Content-Type": "application/jose",
                                                        "In": "10s"})  # fmt: skip
            wait_for(lambda: [p["id"] for p in payloads(out)] == [sent["id"]], timeout=40,
                     what="the released message forwarded upstream")  # fmt: skip
            mark = "mark" + uuid.uuid4().hex[:10]
            subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mosquitto.port),
                            "-q", "1", "-t", "cloud/door", "-m",
                            json.dumps({"id": mark, "message": "marker"})],
                           timeout=30, check=True)  # fmt: skip
            # the marker went up after the echo, on the same topic: once it is stored down
            # here, the echo has been through the bridge
            wait_for(lambda: mark in [m["id"] for m in relay.poll("cloud-door")], timeout=20,
                     what="the marker back down")  # fmt: skip
        assert [m["id"] for m in relay.poll("cloud-door")] == [sent["id"], mark]
        assert relay_rejected(relay) == [] and health(relay)["rejected"] == 0
    finally:
        assert relay.stop() == 0
