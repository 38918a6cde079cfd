"""One user, many devices: a message handled on one device is closed on the others.

Real parts throughout: three ``pushagent run`` processes with separate homes, each with its
own Xvfb + D-Bus session bus + dunst (tests/syncdevices.py), on one real relay and on a real
mosquitto. A click in A's dunst (or ``pushagent read ID`` on A) must close the notification
in B's and C's dunst (their history shows it closed) within 5 s; a device that was off gets
the state it missed when it resumes (``since=``); a state for a message the caller cannot
read is refused; a burst of 10,000 states gets through; two devices reporting in the same
second with skewed clocks end in the same state.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_for
from tests.mosquitto import Mosquitto
from tests.relay import Relay
from tests.syncdevices import Device, running
from tests.test_relay_receipts import Tokens

pytestmark = pytest.mark.desktop
SYNC_DEADLINE = 5.0


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    r = Relay(tmp_path / "relay").start()
    try:
        yield r
    finally:
        assert r.stop() == 0
        assert "Traceback" not in r.log.read_text(), r.log.read_text()


def all_showing(devs: list[Device], n: int = 1) -> None:
    for d in devs:
        wait_for(lambda d=d: d.on_screen() == n, timeout=30, what=f"{n} on {d.name}'s screen")


def closed_within(devs: list[Device], title: str, deadline: float = SYNC_DEADLINE) -> float:
    """Wait until each device's dunst shows nothing and lists ``title`` as closed; the
    seconds it took (the test fails past ``deadline``)."""
    start = time.monotonic()
    for d in devs:
        left = max(0.1, deadline - (time.monotonic() - start))
        wait_for(lambda d=d: d.on_screen() == 0 and title in d.closed(), timeout=left,
                 what=f"{title!r} closed on {d.name} ({d.log()})")  # fmt: skip
    return time.monotonic() - start


def test_a_click_on_one_device_closes_it_on_the_others_through_the_relay(
    relay: Relay, tmp_path: Path
) -> None:
    with running(tmp_path, relay.url, ["door"]) as devs:
        a, b, c = devs
        mid = relay.publish("door", "front door opened", Title="Door")["id"]
        all_showing(devs)
        assert [d.unread() for d in devs] == [1, 1, 1]
        assert a.desktop is not None
        a.desktop.dunstctl("action", "0")  # the user clicks it on A
        closed_within([b, c], "Door")
        for d in (b, c):
            assert d.states()[mid] == "clicked"
            assert d.unread() == 0  # the tray's count follows
        wait_for(lambda: a.states()[mid] == "clicked", timeout=10, what="A clicked")
        # the relay knows who did it; B and C never sent A's click back as their own
        status, body = relay.request("GET", f"/v1/messages/{mid}/receipts")
        assert status == 200, body
        by_device: dict[str, set[str]] = {}
        for r in body["receipts"]:
            by_device.setdefault(r["device"], set()).add(r["state"])
            assert r["owner"] == "anonymous"  # no token: every device is the same "user"
        names = {r["device"]: r["device_name"] for r in body["receipts"]}
        assert names == {a.client_id: "A", b.client_id: "B", c.client_id: "C"}
        assert by_device[a.client_id] >= {"delivered", "displayed", "clicked"}
        for d in (b, c):
            assert by_device[d.client_id] == {"delivered", "displayed"}, body


def test_pushagent_read_on_one_device_and_a_resuming_device_gets_what_it_missed(
    relay: Relay, tmp_path: Path
) -> None:
    with running(tmp_path, relay.url, ["alerts"]) as devs:
        a, b, c = devs
        mid = relay.publish("alerts", "disk 91 % full", Title="Disk")["id"]
        all_showing(devs)
        c.stop()  # C is off (its notification stays on its screen) while A reads it
        done = a.cli("read", mid)
        assert done.returncode == 0, done.stderr
        # A's daemon takes it off A's own screen too: `read` is another process, and the
        # daemon hears A's state back from the relay (found in review: it stayed on A)
        closed_within([a, b], "Disk")
        assert b.states()[mid] == "read" and b.unread() == 0
        assert c.on_screen() == 1 and c.states()[mid] == "displayed"
        c.start()  # resumes with since=<its cursor>: the relay replays A's read
        closed_within([c], "Disk", deadline=15)
        assert c.states()[mid] == "read" and c.unread() == 0


def test_a_click_closes_it_on_the_others_through_mosquitto(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    with running(tmp_path, mosquitto.url, ["home/#"]) as devs:
        a, b, c = devs
        pub(mosquitto, "home/door", {"id": "mqttdoor1", "title": "Door", "message": "opened"})
        all_showing(devs)
        assert a.desktop is not None
        a.desktop.dunstctl("action", "0")
        closed_within([b, c], "Door")
        assert b.states()["mqttdoor1"] == c.states()["mqttdoor1"] == "clicked"
        # a state that overtakes its message (another device, the state topic first) is
        # kept: the message is stored already handled and never shown
        early = {"id": "mqttearly", "state": "read", "device": "phone", "time": 1}
        pub(mosquitto, "edgepush/state/home/bell", early)
        pub(mosquitto, "home/bell", {"id": "mqttearly", "title": "Bell", "message": "ding"})
        pub(mosquitto, "home/bell", {"id": "mqttlater", "title": "Marker", "message": "m"})
        for d in devs:  # the marker was handed over after the early one, in each one's order
            wait_for(lambda d=d: "Marker" in d.shown(), timeout=30, what=f"marker on {d.name}")
            assert d.states()["mqttearly"] == "read"
            assert "Bell" not in d.shown(), d.name  # stored already handled: never shown


def pub(broker: Mosquitto, topic: str, body: dict[str, object]) -> None:
    subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t", topic,
         "-m", json.dumps(body)],
        check=True, timeout=20,
    )  # fmt: skip


# --- the relay's side, at the protocol level ------------------------------------------------


class Stream:
    """A raw HTTP subscription (``/json``, ``/sse``, ``/raw``) read line by line in a thread."""

    def __init__(self, relay: Relay, path: str, headers: dict[str, str] | None = None) -> None:
        req = urllib.request.Request(relay.url + path, headers=headers or {})
        self.resp = urllib.request.urlopen(req, timeout=30)
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for raw in self.resp:
                self.lines.append(raw.decode().rstrip("\n"))
        except (OSError, ValueError, AttributeError):
            pass  # closed by the test (http.client raises AttributeError for that mid-read)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(x) for x in list(self.lines) if x.startswith("{")]

    def states(self) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == "message_state"]

    def close(self) -> None:
        self.resp.close()
        self._thread.join(10)


def test_a_forged_state_is_refused_and_reaches_nobody(tmp_path: Path) -> None:
    tokens = Tokens(tmp_path / "auth.json")
    tokens.add("alice", "--read", "home*", "--write", "home*")
    tokens.add("eve", "--read", "other*")
    relay = Relay(tmp_path / "r", args=["--auth-file", str(tokens.af)]).start()
    streams: list[Stream] = []
    try:
        mid = relay.publish("homedoor", "open", **tokens.h("alice"))["id"]
        as_json = Stream(relay, "/homedoor/json", tokens.h("alice"))
        sse = Stream(relay, "/homedoor/sse", tokens.h("alice"))
        raw = Stream(relay, "/homedoor/raw", tokens.h("alice"))
        streams += [as_json, sse, raw]
        wait_for(lambda: as_json.events() and sse.lines and raw.lines, what="streams open")

        def post(who: str, items: list[dict[str, Any]]) -> tuple[int, Any]:
            return relay.request("POST", "/v1/receipts", json.dumps(items).encode(),
                                 {**tokens.h(who), "Content-Type": "application/json"})  # fmt: skip

        forged = {"id": mid, "state": "clicked", "device": "evil", "topic": "homedoor"}
        status, body = post("eve", [forged])
        assert status == 403 and body["code"] == 40301 and body["http"] == 403, body
        assert mid not in body["error"]
        # without naming the topic: ignored exactly like an unknown id
        anon = {k: v for k, v in forged.items() if k != "topic"}
        assert post("eve", [anon]) == (200, {"accepted": 0, "ignored": 1})
        # alice's own click is the first and only state her streams hear
        real = {"id": mid, "state": "clicked", "device": "laptop", "device_name": "Laptop"}
        assert post("alice", [real]) == (200, {"accepted": 1, "ignored": 0})
        wait_for(lambda: as_json.states(), what="alice's state on her stream")
        [got] = as_json.states()
        assert {k: got[k] for k in ("id", "state", "device", "topic", "device_name")} == {
            "id": mid, "state": "clicked", "device": "laptop", "topic": "homedoor",
            "device_name": "Laptop"}  # fmt: skip
        assert isinstance(got["time"], int)
        wait_for(lambda: "event: message_state" in sse.lines, what="SSE named event")
        relay.publish("homedoor", "marker", **tokens.h("alice"))
        wait_for(lambda: "marker" in raw.lines, what="marker on /raw")
        assert [x for x in raw.lines if x] == ["marker"]  # a state is not a line of text
        # a duplicate or lower state from another of her devices is a no-op: not sent again
        late = {"id": mid, "state": "dismissed", "device": "phone"}
        assert post("alice", [late, real])[0] == 200
        relay.publish("homedoor", "marker2", **tokens.h("alice"))
        wait_for(lambda: any(e.get("message") == "marker2" for e in as_json.events()))
        assert len(as_json.states()) == 1
        # resuming after the message: the state is replayed (poll=1 lists messages only)
        resumed = Stream(relay, f"/homedoor/json?since={mid}", tokens.h("alice"))
        streams.append(resumed)
        wait_for(lambda: resumed.states(), what="replayed state")
        assert [(s["id"], s["state"]) for s in resumed.states()] == [(mid, "clicked")]
        polled = relay.request("GET", "/homedoor/json?poll=1&since=all", None, tokens.h("alice"))
        assert "message_state" not in str(polled[1])
    finally:
        assert relay.stop() == 0  # ends the streams first: their readers see the end
        for s in streams:
            s.close()


def _publish_many(relay: Relay, topic: str, n: int) -> list[str]:
    def part(count: int) -> list[str]:
        conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=30)
        ids = []
        try:
            for _ in range(count):
                conn.request("PUT", f"/{topic}", b"burst")
                resp = conn.getresponse()
                body = resp.read()
                assert resp.status == 200, body
                ids.append(json.loads(body)["id"])
        finally:
            conn.close()
        return ids

    with ThreadPoolExecutor(8) as pool:
        return [i for ids in pool.map(part, [n // 8] * 8) for i in ids]


def _read_all_on_a_reaches_b(a: Device, b: Device, timeout: float) -> float:
    """Once both devices hold the 10,000 messages, ``pushagent read --all`` on A; the seconds
    until B has all 10,000 as read (the test fails past ``timeout``)."""
    for d in (a, b):
        wait_for(lambda d=d: d.count() == 10_000, timeout=90, interval=0.2,
                 what=f"10,000 messages on {d.name}")  # fmt: skip
    done = a.cli("read", "--all")
    assert done.returncode == 0 and b"10000" in done.stdout, done.stdout
    start = time.monotonic()
    wait_for(lambda: b.count("read") == 10_000, timeout=timeout, interval=0.2,
             what=f"10,000 read states on B (now {b.count('read')})")  # fmt: skip
    return time.monotonic() - start


@pytest.mark.timeout(300)
def test_ten_thousand_states_in_a_burst(relay: Relay, tmp_path: Path) -> None:
    with running(tmp_path, relay.url, ["burst"], ("A", "B"), desktop=False,
                 notifier="none") as devs:  # fmt: skip
        a, b = devs
        ids = _publish_many(relay, "burst", 10_000)
        took = _read_all_on_a_reaches_b(a, b, timeout=60)
        states = b.states()
        assert set(states) == set(ids) and set(states.values()) == {"read"}
        assert a.connected() and b.connected()  # nothing fell over on the way
        assert took < 30, took


def test_two_devices_in_the_same_second_with_skewed_clocks_converge(tmp_path: Path) -> None:
    tokens = Tokens(tmp_path / "auth.json")
    tokens.add("alice", "--read", "home*", "--write", "home*")
    relay = Relay(tmp_path / "r", args=["--auth-file", str(tokens.af)]).start()
    streams: list[Stream] = []
    try:
        mid = relay.publish("homebell", "ding", **tokens.h("alice"))["id"]
        live = Stream(relay, "/homebell/json", tokens.h("alice"))
        streams.append(live)
        wait_for(live.events, what="stream open")
        now = int(time.time())
        # the laptop's clock runs an hour behind, the phone's a minute ahead: the order must
        # come from the states (dismissed < clicked), not from either clock
        bodies = [
            [{"id": mid, "state": "clicked", "device": "laptop", "time": now - 3600}],
            [{"id": mid, "state": "dismissed", "device": "phone", "time": now + 59}],
        ]
        with ThreadPoolExecutor(2) as pool:
            answers = list(
                pool.map(
                    lambda b: relay.request(
                        "POST", "/v1/receipts", json.dumps(b).encode(), tokens.h("alice")
                    ),
                    bodies,
                )
            )
        assert [a[0] for a in answers] == [200, 200], answers
        relay.publish("homebell", "marker", **tokens.h("alice"))
        wait_for(lambda: any(e.get("message") == "marker" for e in live.events()))
        heard = [s["state"] for s in live.states()]
        assert heard in (["clicked"], ["dismissed", "clicked"]), heard  # ends on the higher
        status, body = relay.request("GET", f"/v1/messages/{mid}/receipts", None,
                                     tokens.h("alice"))  # fmt: skip
        assert status == 200 and body["state"] == "clicked", body
        resumed = Stream(relay, f"/homebell/json?since={mid}", tokens.h("alice"))
        streams.append(resumed)
        wait_for(resumed.states, what="replayed state")
        assert [(s["state"], s["device"]) for s in resumed.states()] == [("clicked", "laptop")]
    finally:
        assert relay.stop() == 0
        for s in streams:
            s.close()


@pytest.mark.timeout(300)
def test_ten_thousand_states_in_a_burst_over_mosquitto(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    from tests.mqtt_helpers import Publisher, envelope

    with running(tmp_path, mosquitto.url, ["bulk/#"], ("A", "B"), desktop=False,
                 notifier="none") as devs:  # fmt: skip
        a, b = devs
        with Publisher(mosquitto.port) as p:
            p.publish("bulk/x", (envelope(i, "bulk") for i in range(10_000)))
        took = _read_all_on_a_reaches_b(a, b, timeout=90)
        assert b.count() == 10_000 and a.connected() and b.connected()
        assert took < 60, took


# the library's own use of websockets (as in tests/test_ntfy_subscriber_lib.py)
@pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager")
def test_an_ntfy_client_that_does_not_know_message_state_skips_it(relay: Relay) -> None:
    """``ntfy-api`` (a subscriber nobody here wrote, tests/test_ntfy_subscriber_lib.py) over
    /ws: a ``message_state`` between two messages is skipped, the stream carries on."""
    import ntfy_api

    sub = ntfy_api.NtfyClient(base_url=relay.url).subscribe("libsync")
    with sub:
        wait_for(lambda: not sub.messages.empty(), timeout=15, what="the open event")
        assert str(sub.messages.get_nowait().event) == "open"
        first = relay.publish("libsync", "first")
        posted = relay.request("POST", "/v1/receipts", json.dumps(
            [{"id": first["id"], "state": "clicked", "device": "laptop"}]).encode())  # fmt: skip
        assert posted == (200, {"accepted": 1, "ignored": 0})
        marker = relay.publish("libsync", "marker")
        got: list[Any] = []
        wait_for(lambda: _take(sub, got) and got[-1].id == marker["id"], timeout=15,
                 what="the marker after the state")  # fmt: skip
    assert [(str(m.event), m.id) for m in got] == [("message", first["id"]),
                                                   ("message", marker["id"])]  # fmt: skip


def _take(sub: Any, into: list[Any]) -> bool:
    while not sub.messages.empty():
        into.append(sub.messages.get_nowait())
    return bool(into)
