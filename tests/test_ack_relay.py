"""Acknowledge-until-acked at a real relay process: the publish parameters reach subscribers,
bad values are ntfy 400s, and ``GET /v1/messages/<id>/ack`` answers who acknowledged first
(and long-polls, bounded, until someone does)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.relay import Relay, module_relay, unique_topic
from tests.test_relay_receipts import Tokens


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    yield from module_relay(tmp_path_factory, "ack")


def ack_of(relay: Relay, mid: str, wait: float = 0, headers: dict[str, str] | None = None) -> Any:
    return relay.request("GET", f"/v1/messages/{mid}/ack?wait={wait}", None, headers)


def post_ack(relay: Relay, mid: str, device: str, name: str, at: float | None = None,
             headers: dict[str, str] | None = None) -> Any:  # fmt: skip
    item: dict[str, Any] = {"id": mid, "state": "acknowledged", "device": device,
                            "device_name": name}  # fmt: skip
    if at is not None:
        item["time"] = at
    return relay.request("POST", "/v1/receipts", json.dumps([item]).encode(), headers)


def test_ack_fields_reach_subscribers_and_the_answer(relay: Relay) -> None:
    topic = unique_topic("ack")
    out = relay.publish(topic, "server down", **{"X-Ack": "required", "X-Ack-Retry": "60s",
                                                 "X-Ack-Expire": "1h"})  # fmt: skip
    assert (out["ack"], out["ack_retry"], out["ack_expire"]) == ("required", 60, 3600)
    polled = relay.poll(topic)
    assert [(m["id"], m["ack"], m["ack_retry"], m["ack_expire"]) for m in polled] == [
        (out["id"], "required", 60, 3600)]  # fmt: skip
    status, body = relay.request("PUT", f"/{topic}?ack=required&ack-retry=5s", b"x")
    assert status == 200 and (body["ack"], body["ack_retry"]) == ("required", 5)
    body = json.dumps({"topic": topic, "message": "m", "ack": "required", "ack_expire": "2m"})
    status, answer = relay.request("POST", "/", body.encode())
    assert status == 200 and (answer["ack"], answer["ack_expire"]) == ("required", 120)


@pytest.mark.parametrize(
    ("headers", "words"),
    [({"X-Ack": "later"}, "X-Ack must be 'required'"),
     ({"X-Ack": "required", "X-Ack-Retry": "0s"}, "X-Ack-Retry '0s' must be between 1 s"),
     ({"X-Ack": "required", "X-Ack-Expire": "forever"}, "is not a duration"),
     ({"X-Ack": "required", "X-Ack-Retry": "1h", "X-Ack-Expire": "1m"}, "not be shorter")],
)  # fmt: skip
def test_bad_values_are_400_in_ntfys_shape(relay: Relay, headers: dict[str, str],
                                           words: str) -> None:  # fmt: skip
    topic = unique_topic("ackbad")
    status, body = relay.request("PUT", f"/{topic}", b"x", headers)
    assert status == 400, body
    assert body["code"] == 40000 and body["http"] == 400 and words in body["error"], body
    assert relay.poll(topic) == []  # refused, never stored


def test_nobody_yet_is_200_false_and_wait_is_bounded(relay: Relay) -> None:
    topic = unique_topic("ackwait")
    mid = relay.publish(topic, "x", **{"X-Ack": "required", "X-Ack-Expire": "10m"})["id"]
    started = time.monotonic()
    status, body = ack_of(relay, mid, wait=1)
    took = time.monotonic() - started
    assert status == 200 and body["acknowledged"] is False and body["ack_required"] is True
    assert 0.9 <= took < 5, took
    assert body["expires"] > time.time() + 500
    plain = relay.publish(topic, "no ack asked")["id"]
    status, body = ack_of(relay, plain)
    assert status == 200 and body == {"id": plain, "topic": topic, "ack_required": False,
                                      "acknowledged": False}  # fmt: skip
    assert ack_of(relay, "nosuchmessage1")[0] == 404
    status, body = ack_of(relay, mid, wait="soon")  # type: ignore[arg-type]
    assert status == 400 and "wait must be a number of seconds" in body["error"]


def test_long_poll_is_released_by_the_ack_with_who_and_when(relay: Relay) -> None:
    topic = unique_topic("ackpoll")
    mid = relay.publish(topic, "x", **{"X-Ack": "required"})["id"]
    got: list[Any] = []
    poller = threading.Thread(target=lambda: got.append((ack_of(relay, mid, wait=60),
                                                         time.monotonic())))  # fmt: skip
    poller.start()
    time.sleep(0.5)  # let the poll start waiting; the outcome is checked below either way
    sent = time.monotonic()
    assert post_ack(relay, mid, "pushagent-b", "B's laptop")[0] == 200
    poller.join(30)
    assert got, "the long-poll did not return"
    (status, body), when = got[0]
    assert status == 200 and body["acknowledged"] is True
    assert body["device"] == {"id": "pushagent-b", "name": "B's laptop"}
    assert when - sent < 5
    assert abs(body["time"] - time.time()) < 30


def test_two_acks_in_the_same_second_first_recorded_wins_whatever_the_clocks(
    relay: Relay,
) -> None:
    topic = unique_topic("ackrace")
    mid = relay.publish(topic, "x", **{"X-Ack": "required"})["id"]
    now = time.time()
    assert post_ack(relay, mid, "dev-b", "B", at=now)[0] == 200
    # C's clock runs 20 s behind: its acknowledgement claims to be earlier, but came later
    assert post_ack(relay, mid, "dev-c", "C", at=now - 20)[0] == 200
    body = ack_of(relay, mid)[1]
    assert body["device"]["name"] == "B" and body["time"] == pytest.approx(now, abs=1)
    # and truly concurrent: exactly one winner, both states kept in the receipts
    mid2 = relay.publish(topic, "y", **{"X-Ack": "required"})["id"]
    barrier = threading.Barrier(2)

    def racer(dev: str) -> None:
        barrier.wait()
        post_ack(relay, mid2, dev, dev.upper())

    threads = [threading.Thread(target=racer, args=(d,)) for d in ("dev-x", "dev-y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    body = ack_of(relay, mid2)[1]
    assert body["acknowledged"] and body["device"]["id"] in ("dev-x", "dev-y")
    receipts = relay.request("GET", f"/v1/messages/{mid2}/receipts")[1]["receipts"]
    assert sorted(r["device"] for r in receipts if r["state"] == "acknowledged") == [
        "dev-x", "dev-y"]  # fmt: skip


def test_readable_by_whoever_can_read_the_topic(tmp_path: Path) -> None:
    tokens = Tokens(tmp_path / "auth.json")
    tokens.add("alice", "--read", "home*", "--write", "home*")
    tokens.add("bob", "--read", "home*")
    tokens.add("eve", "--read", "other*")
    relay = Relay(tmp_path / "r", args=["--auth-file", str(tokens.af)]).start()
    try:
        mid = relay.publish("homealarm", "smoke", **{"X-Ack": "required"}, **tokens.h("alice"))
        mid = mid["id"]
        # eve may not read the topic: her ack is ignored and she cannot see the answer
        assert post_ack(relay, mid, "eve-phone", "Eve", headers=tokens.h("eve"))[1] == {
            "accepted": 0, "ignored": 1}  # fmt: skip
        assert ack_of(relay, mid, headers=tokens.h("eve"))[0] == 404
        assert ack_of(relay, mid)[0] == 404  # anonymous: the same 404 as an unknown id
        assert post_ack(relay, mid, "bob-phone", "Bob", headers=tokens.h("bob"))[0] == 200
        body = ack_of(relay, mid, headers=tokens.h("alice"))[1]
        assert (body["acknowledged"], body["owner"], body["device"]["name"]) == (
            True, "bob", "Bob")  # fmt: skip
    finally:
        assert relay.stop() == 0


def test_pushagent_send_ack_flags(relay: Relay, tmp_path: Path) -> None:
    from tests.helpers import pushagent

    topic = unique_topic("acksend")
    home = tmp_path / "home"
    home.mkdir()
    done = pushagent("send", "--server", relay.url, topic, "fire", "--ack", "--ack-retry", "5s",
                     "--ack-expire", "10m", home=home)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (m,) = relay.poll(topic)
    assert (m["ack"], m["ack_retry"], m["ack_expire"]) == ("required", 5, 600)
    bad = pushagent("send", "--server", relay.url, topic, "x", "--ack", "--ack-retry", "0s",
                    home=home)  # fmt: skip
    assert bad.returncode == 2 and b"--ack: X-Ack-Retry '0s' must be between" in bad.stderr
    alone = pushagent("send", "--server", relay.url, topic, "x", "--ack-retry", "5s", home=home)
    assert alone.returncode == 2 and b"only with --ack" in alone.stderr
    assert len(relay.poll(topic)) == 1  # the refused ones were never sent


def test_pushagent_send_ack_over_mqtt(mosquitto: Any, tmp_path: Path) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from tests.helpers import pushagent, wait_for

    got: list[bytes] = []
    sub = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    sub.on_message = lambda c, u, m: got.append(m.payload)
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe("pager/#", qos=1)
    sub.loop_start()
    try:
        wait_for(subscribed.is_set, what="the subscriber's SUBACK")
        home = tmp_path / "home"
        home.mkdir()
        done = pushagent("send", "--server", mosquitto.url, "pager/home", "smoke", "--ack",
                         "--ack-retry", "30s", home=home)  # fmt: skip
        assert done.returncode == 0, done.stderr
        wait_for(lambda: got, timeout=20, what="the envelope on the broker")
        env = json.loads(got[0])
        assert (env["ack"], env["ack_retry"], env["ack_expire"]) == ("required", 30, 3600)
    finally:
        sub.loop_stop()
        sub.disconnect()
