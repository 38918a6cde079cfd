"""The RabbitMQ and NATS fixtures themselves: a real MQTT round trip, and nothing left running."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.brokers import Broker, Nats, RabbitMQ, Rumqttd, mqtt_ready
from tests.helpers import wait_for


def _round_trip(port: int, protocol: int = paho.MQTTv311) -> list[bytes]:
    """Subscribe (QoS 1, MQTT 3.1.1, which both brokers speak), publish, return what came."""
    got: list[bytes] = []
    topic = f"fixture/{uuid.uuid4().hex[:8]}"
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"fx-{uuid.uuid4().hex[:8]}",
                    protocol=protocol)  # fmt: skip
    subscribed: list[object] = []
    c.on_subscribe = lambda cl, u, mid, codes, props: subscribed.append(codes)
    c.on_message = lambda cl, u, msg: got.append(bytes(msg.payload))
    c.connect("127.0.0.1", port, 30)
    c.loop_start()
    try:
        wait_for(c.is_connected, timeout=10, what="CONNACK")
        c.subscribe(topic, qos=1)
        wait_for(lambda: subscribed, timeout=10, what="SUBACK")
        c.publish(topic, b"hello", qos=1).wait_for_publish(timeout=10)
        wait_for(lambda: got, timeout=10, what="the message back")
    finally:
        c.disconnect()
        c.loop_stop()
    return got


@pytest.mark.parametrize("name", ["rabbitmq", "nats"])
def test_broker_fixture_round_trips_a_qos1_message(
    name: str, request: pytest.FixtureRequest
) -> None:
    broker: Broker = request.getfixturevalue(name)
    assert _round_trip(broker.port) == [b"hello"]


def test_a_stopped_rabbitmq_leaves_no_epmd_or_node_behind(tmp_path: Path) -> None:
    broker = RabbitMQ(tmp_path / "rmq")
    broker.start()
    beam, epmd = broker.proc, broker.epmd
    assert beam is not None and epmd is not None
    broker.stop()
    assert beam.poll() is not None and epmd.poll() is not None
    assert not mqtt_ready(broker.port)


def test_nats_comes_back_on_the_same_port_after_sigkill(tmp_path: Path) -> None:
    broker = Nats(tmp_path / "nats")
    broker.start()
    try:
        broker.kill()
        assert not mqtt_ready(broker.port)
        broker.start()
        assert _round_trip(broker.port) == [b"hello"]
    finally:
        broker.stop()


def test_rumqttd_speaks_mqtt5_on_its_port_and_311_on_v4_port(rumqttd: Rumqttd) -> None:
    assert _round_trip(rumqttd.port, paho.MQTTv5) == [b"hello"]
    assert _round_trip(rumqttd.v4_port) == [b"hello"]


@pytest.mark.parametrize("taken", ["port", "v4_port"])
def test_rumqttd_whose_port_was_taken_starts_on_new_ports(taken: str, tmp_path: Path) -> None:
    """CI: another socket got rumqttd's MQTT 5 port between free_port() and rumqttd's bind;
    rumqttd exited after saying it listened, and every test on it failed. The fixture now sees
    the lost bind and takes new ports before any client has the old ones."""
    broker = Rumqttd(tmp_path / "rumqttd")
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", getattr(broker, taken)))
    squatter.listen()  # answers TCP, never MQTT
    try:
        broker.start()
        assert getattr(broker, taken) != squatter.getsockname()[1]
        assert _round_trip(broker.port, paho.MQTTv5) == [b"hello"]
        assert _round_trip(broker.v4_port) == [b"hello"]
    finally:
        broker.stop()
        squatter.close()
    assert broker.proc is None
