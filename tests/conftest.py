"""Shared fixtures. Fixtures that start real servers live in their own modules
(tests/mosquitto.py, ...) and are registered here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

from tests.brokers import Broker, Nats, RabbitMQ, Rumqttd
from tests.desktop import Desktop
from tests.mosquitto import Mosquitto

if TYPE_CHECKING:
    from playwright.async_api import Browser

B = TypeVar("B", bound=Broker)


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


def _session_broker(kind: type[B], tmp_path_factory: pytest.TempPathFactory) -> Iterator[B]:
    """Body of a session-scoped broker fixture: ``kind`` in its own temp dir (named after
    the class), stopped at the end even when it failed to start."""
    broker = kind(tmp_path_factory.mktemp(kind.__name__.lower()))
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQ]:
    """A real RabbitMQ 3.10 with rabbitmq_mqtt, once per session (it boots in ~12 s)."""
    yield from _session_broker(RabbitMQ, tmp_path_factory)


@pytest.fixture(scope="session")
def rumqttd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rumqttd]:
    """rumqttd (MQTT 5 and 3.1.1) from PyPI's iotcore, once per session."""
    yield from _session_broker(Rumqttd, tmp_path_factory)


@pytest.fixture(scope="session")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nats]:
    """A real nats-server 2.9 with JetStream and MQTT, once per session."""
    yield from _session_broker(Nats, tmp_path_factory)


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


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's chromium for the web app's tests (tests/browser.py). Playwright is imported
    here, not at the top: it costs ~0.2 s, which every other test session would pay."""
    from tests.browser import chromium

    async with chromium() as b:
        yield b
