"""Shared fixtures. Fixtures that start real servers live in their own modules
(tests/mosquitto.py, ...) and are registered here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokers import Nats, RabbitMQ, Rumqttd
from tests.desktop import Desktop
from tests.mosquitto import Mosquitto


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh PUSHAGENT_HOME for one test."""
    d = tmp_path / "home"
    d.mkdir()
    return d


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real mosquitto on a free port, persistence in the test's temp dir."""
    broker = Mosquitto(tmp_path / "mosquitto").start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQ]:
    """A real RabbitMQ 3.10 with rabbitmq_mqtt, once per session (it boots in ~12 s)."""
    broker = RabbitMQ(tmp_path_factory.mktemp("rabbitmq"))
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def rumqttd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rumqttd]:
    """rumqttd (MQTT 5 and 3.1.1) from PyPI's iotcore, once per session."""
    broker = Rumqttd(tmp_path_factory.mktemp("rumqttd"))
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nats]:
    """A real nats-server 2.9 with JetStream and MQTT, once per session."""
    broker = Nats(tmp_path_factory.mktemp("nats"))
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def desktop(tmp_path: Path) -> Iterator[Desktop]:
    """Xvfb + a private D-Bus session bus + dunst (tests/desktop.py); ``.env`` for children."""
    session = Desktop(tmp_path / "desktop").start()
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture
def bare_desktop(tmp_path: Path) -> Iterator[Desktop]:
    """Xvfb and a D-Bus session bus but NO notification daemon."""
    session = Desktop(tmp_path / "desktop").start(dunst=False)
    try:
        yield session
    finally:
        session.stop()
