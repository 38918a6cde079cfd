"""A retained plain-text message is stored once, not again at every reconnect, and a retained
value published again while the agent was away still arrives (docs/MQTT.md, *Retained
messages*), on mosquitto (MQTT 5 and 3.1.1), RabbitMQ and NATS (3.1.1).

Every (re)connect SUBSCRIBEs again, and a broker MUST send the retained messages of a filter
subscribed again, with RETAIN set (MQTT 3.1.1 §3.8.4, MQTT 5 §3.3.1.3): a plain-text message
has no id, so each copy was stored, and shown, as a new message.

RabbitMQ 3.10 sends retained messages to exact-topic subscriptions only (none for ``t/#``), so
the agent here subscribes to the exact topics.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.envelope import Message, from_fields
from agent.store import Redelivery, Store
from agent.transports.mqtt_session import SessionToken
from tests.helpers import wait_for
from tests.mosquitto import Mosquitto
from tests.mqtt_helpers import Agent
from tests.netproxy import NetProxy
from tests.test_mqtt_plain_resend import texts


class RetainingPublisher:
    """A paho 3.1.1 publisher that can set RETAIN and pick the QoS."""

    def __init__(self, port: int) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        self.client.connect("127.0.0.1", port, 30)
        self.client.loop_start()
        wait_for(self.client.is_connected, timeout=15, what="publisher connected")

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout=15)
        assert info.is_published(), f"no PUBACK for {topic}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def count(home: Path, text: str) -> int:
    return sum(1 for _, m in texts(home) if m == text)


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("name", "protocol"),
    [("mosquitto", "5"), ("mosquitto", "3.1.1"), ("rabbitmq", "auto"), ("nats", "auto")],
    ids=["mosquitto-5", "mosquitto-311", "rabbitmq", "nats"],
)
def test_a_retained_message_is_stored_once_across_reconnects(
    name: str, protocol: str, request: pytest.FixtureRequest, home: Path
) -> None:
    broker: Mosquitto = request.getfixturevalue(name)
    topic = f"r{uuid.uuid4().hex[:10]}"
    lamp, marker = f"{topic}/lamp", f"{topic}/marker"
    agent = Agent(home, broker.url, "--topic", lamp, "--topic", marker,
                  "--mqtt-protocol", protocol)  # fmt: skip
    pub = RetainingPublisher(broker.port)
    marks = 0

    def reconnect() -> None:
        """Restart the agent, then wait until a marker published after its SUBSCRIBE (so
        after the broker sent the retained copies) is stored: every copy has been handled."""
        nonlocal marks
        agent.stop()
        agent.start()
        marks += 1
        pub.publish(marker, f"mark {marks}".encode())
        wait_for(lambda: count(home, f"mark {marks}") == 1, timeout=30,
                 what=f"mark {marks} stored ({texts(home)}; {agent.log()[-1500:]})")  # fmt: skip

    try:
        pub.publish(lamp, b"ON", retain=True)
        agent.start()
        wait_for(lambda: count(home, "ON") == 1, timeout=30, what="the retained ON stored")
        reconnect()
        reconnect()
        assert count(home, "ON") == 1, texts(home)  # 3 before: once per SUBSCRIBE
        # Published again while the agent is away: a new message, which must arrive (the
        # session queues it; the retained copy of the same text is not shown besides).
        agent.stop()
        pub.publish(lamp, b"ON", retain=True)
        agent.start()
        wait_for(lambda: count(home, "ON") == 2, timeout=30,
                 what=f"the second ON stored ({texts(home)})")  # fmt: skip
        reconnect()
        assert count(home, "ON") == 2, texts(home)
        # A QoS 0 retained value published while away is not queued by every broker: its
        # retained copy may be its only delivery, so that one is always kept.
        agent.stop()
        pub.publish(lamp, b"OFF", qos=0, retain=True)
        agent.start()
        wait_for(lambda: count(home, "OFF") >= 1, timeout=30,
                 what=f"the QoS 0 OFF stored ({texts(home)})")  # fmt: skip
        if name == "mosquitto":  # mosquitto queues no QoS 0 for an offline client
            reconnect()
            assert count(home, "OFF") >= 1
    finally:
        pub.publish(lamp, b"", retain=True)  # clear it: the session brokers are shared
        pub.close()
        if agent.proc is not None and agent.proc.poll() is None:
            assert agent.stop() == 0


# --- the store's rule (agent.store.retained) ----------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "agent.db") as s:
        yield s


def plain(mid: str, text: str = "ON") -> Message:
    return from_fields({"id": mid, "message": text, "time": 1000}, topic="t/lamp")


def put(store: Store, mid: str, *, retained: bool, session: str = "S1", digest: bytes = b"D",
        topic: str = "t/lamp") -> list[str]:  # fmt: skip
    """Store one id-less message (no trusted packet id); return the ids that were new."""
    key = Redelivery(None, digest, False, topic, session, retained)
    return [
        s.message.id for s in store.insert_batch([plain(mid)], source="s", redelivery={mid: key})
    ]


def test_a_retained_copy_of_the_last_message_on_its_topic_takes_its_id(store: Store) -> None:
    assert put(store, "a1", retained=True) == ["a1"]  # the first copy: nothing before it
    assert put(store, "a2", retained=True) == []  # the copy at the next reconnect
    assert put(store, "a3", retained=False) == ["a3"]  # the same text published again: new
    assert put(store, "a4", retained=True) == []  # ... and its copy is a copy of a3
    assert store.count() == 2


def test_a_retained_copy_is_kept_when_anything_differs(store: Store) -> None:
    put(store, "b1", retained=False)
    assert put(store, "b2", retained=True, digest=b"E") == ["b2"]  # another value
    assert put(store, "b3", retained=True, session="S2") == ["b3"]  # a new broker session
    assert put(store, "b4", retained=True, topic="t/other") == ["b4"]  # nothing on that topic
    assert put(store, "b5", retained=True, session="S2") == []  # b3's copy, in S2


def test_a_queued_message_and_its_retained_copy_in_one_batch_are_stored_once(
    store: Store,
) -> None:
    """On a resumed session the queued message (RETAIN clear) and the SUBSCRIBE's copy of it
    (RETAIN set) can arrive together."""
    keys = {"c1": Redelivery(None, b"D", False, "t/lamp", "S1", False),
            "c2": Redelivery(None, b"D", False, "t/lamp", "S1", True)}  # fmt: skip
    new = store.insert_batch([plain("c1"), plain("c2")], source="s", redelivery=keys)
    assert [s.message.id for s in new] == ["c1"] and store.count() == 1


def test_the_session_token_changes_with_a_new_session_or_another_qos(tmp_path: Path) -> None:
    tokens = SessionToken(tmp_path, "c", qos=1)
    assert tokens.begin()
    first = tokens.settle(resumed=False)
    assert first is not None
    assert tokens.begin() and tokens.settle(resumed=True) == first  # the broker resumed it
    assert SessionToken(tmp_path, "other", qos=1).settle(resumed=True) not in (None, first)
    renewed = tokens.settle(resumed=False)  # a new session at the broker
    assert renewed is not None and tokens.settle(resumed=True) == renewed
    # subscribed at QoS 0, nothing was queued: a copy after the change to 1 may be the only one
    at0 = SessionToken(tmp_path, "c", qos=0).settle(resumed=True)
    assert at0 not in (None, renewed)
    assert tokens.settle(resumed=True) not in (None, renewed, at0)


def test_a_token_left_pending_by_an_attempt_is_void(tmp_path: Path) -> None:
    """An attempt that sent its CONNECT and never settled (killed, no CONNACK in time) may have
    begun a session: the next CONNACK's "present" may be of that one."""
    tokens = SessionToken(tmp_path, "c", qos=1)
    tokens.begin()
    first = tokens.settle(resumed=False)
    tokens.begin()  # ... and nothing more
    tokens.begin()
    second = tokens.settle(resumed=True)
    assert second not in (None, first)
    # one token for all servers: a session begun through another node of a cluster replaces
    # the token of every node
    third = SessionToken(tmp_path, "c", qos=1).settle(resumed=False)
    assert third not in (None, second) and tokens.settle(resumed=True) == third


# --- a broker session the agent made no token for ------------------------------------------------


class HeldConnack(NetProxy):
    """Forwards both ways, but holds what the broker sends while ``passing`` is clear."""

    def __init__(self, port: int) -> None:
        super().__init__("127.0.0.1", port)
        self.passing = threading.Event()
        self.passing.set()

    def _forward(self, link: Any, dst: socket.socket, data: bytes, gate: threading.Event,
                 direction: str) -> bool:  # fmt: skip
        if direction == "down":
            self.passing.wait()
        return super()._forward(link, dst, data, gate, direction)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_session_begun_by_an_attempt_killed_before_its_connack_keeps_the_copies(
    protocol: str, tmp_path: Path, home: Path
) -> None:
    """The broker begins a session when it accepts the CONNECT; the agent can be killed before
    it reads the CONNACK. Its token was written only after a CONNACK with session present 0,
    so the old session's token stayed, and the next CONNECT, told the session is present (the
    one the dead attempt began), took it for the old one: a retained value published while
    there was no session (its copy its only delivery) was taken for the copy of the one
    stored before, and lost. The CONNACK is held here by a proxy until the agent is killed."""
    broker = Mosquitto(tmp_path / "mosquitto", persistence=False).start()
    proxy = HeldConnack(broker.port).start()
    client_id = f"pushagent-r{uuid.uuid4().hex[:10]}"
    (home / "config.toml").write_text(f'client_id = "{client_id}"\n')
    lamp, marker = "t/lamp", "t/marker"
    agent = Agent(home, f"mqtt://127.0.0.1:{proxy.port}", "--topic", lamp, "--topic", marker,
                  "--mqtt-protocol", protocol)  # fmt: skip
    pub = RetainingPublisher(broker.port)
    try:
        pub.publish(lamp, b"ON", retain=True)
        agent.start()
        wait_for(lambda: count(home, "ON") == 1, timeout=30, what="the retained ON stored")
        assert agent.stop() == 0
        pub.close()
        broker.restart()  # no persistence: the agent's session is gone, and the value with it
        pub = RetainingPublisher(broker.port)
        pub.publish(lamp, b"ON", retain=True)  # the lamp switched on again: a new message
        proxy.passing.clear()
        seen = broker.log.read_text(errors="replace").count(client_id)
        agent.start(wait_connected=False)
        wait_for(lambda: broker.log.read_text(errors="replace").count(client_id) > seen,
                 timeout=30, what="the broker accepted the CONNECT")  # fmt: skip
        assert agent.proc is not None
        agent.proc.kill()  # SIGKILL, its CONNACK unread
        agent.proc.wait(timeout=10)
        proxy.cut()
        proxy.passing.set()
        agent.start()
        pub.publish(marker, b"mark")
        wait_for(lambda: count(home, "mark") == 1, timeout=30,
                 what=f"the marker stored ({texts(home)}; {agent.log()[-1500:]})")  # fmt: skip
        assert count(home, "ON") == 2, texts(home)  # 1 before: the second ON was lost
    finally:
        pub.close()
        if agent.proc is not None and agent.proc.poll() is None:
            assert agent.stop() == 0
        proxy.close()
        broker.stop()


@pytest.mark.timeout(120)
def test_a_session_begun_through_another_node_voids_the_token(tmp_path: Path, home: Path) -> None:
    """The nodes of a broker cluster share the agent's session (here: two listeners of one
    mosquitto). A token per server kept node A's while an attempt through node B, killed
    before its CONNACK, began a new session: back on A, "session present" (B's) resumed A's
    old token and the second ON was lost, as in the case above."""
    from tests.helpers import free_port

    p2 = free_port()
    broker = Mosquitto(tmp_path / "mosquitto", persistence=False,
                       extra_config=f"listener {p2} 127.0.0.1").start()  # fmt: skip
    node_b = HeldConnack(p2).start()
    client_id = f"pushagent-r{uuid.uuid4().hex[:10]}"
    (home / "config.toml").write_text(f'client_id = "{client_id}"\n')
    topics = ("--topic", "t/lamp", "--topic", "t/marker")
    via_a = Agent(home, broker.url, *topics)
    via_b = Agent(home, f"mqtt://127.0.0.1:{node_b.port}", *topics)
    pub = RetainingPublisher(broker.port)
    try:
        pub.publish("t/lamp", b"ON", retain=True)
        via_a.start()
        wait_for(lambda: count(home, "ON") == 1, timeout=30, what="the retained ON stored")
        assert via_a.stop() == 0
        pub.close()
        broker.restart()  # the session is gone, and the value with it
        pub = RetainingPublisher(broker.port)
        pub.publish("t/lamp", b"ON", retain=True)  # switched on again: a new message
        node_b.passing.clear()
        seen = broker.log.read_text(errors="replace").count(client_id)
        via_b.start(wait_connected=False)
        wait_for(lambda: broker.log.read_text(errors="replace").count(client_id) > seen,
                 timeout=30, what="node B accepted the CONNECT")  # fmt: skip
        assert via_b.proc is not None
        via_b.proc.kill()
        via_b.proc.wait(timeout=10)
        node_b.cut()
        via_a.start()
        pub.publish("t/marker", b"mark")
        wait_for(lambda: count(home, "mark") == 1, timeout=30,
                 what=f"the marker stored ({texts(home)}; {via_a.log()[-1500:]})")  # fmt: skip
        assert count(home, "ON") == 2, texts(home)
    finally:
        pub.close()
        if via_a.proc is not None and via_a.proc.poll() is None:
            assert via_a.stop() == 0
        node_b.close()
        broker.stop()
