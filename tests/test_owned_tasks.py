"""Every task of a connection is owned: a failure in the reader, the committer or the watchdog
ends the session with the failure logged at ERROR and a reconnect, never a silent stall.

The transports run in-process against real servers (a scriptable ntfy WebSocket server in the
test, a real mosquitto); each test makes one task fail once by patching one of its calls,
then checks the outcome: an ERROR naming the task, a second connection, and every honest
message stored exactly once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from websockets.asyncio.server import ServerConnection, serve

from agent import config
from agent.config import AgentConfig, WsConfig
from agent.store import Store
from agent.transports import Batch
from agent.transports import ws as ws_mod
from agent.transports.mqtt import MqttTransport
from agent.transports.paho_conn import PahoConn
from agent.transports.ws import WsTransport
from tests.mosquitto import Mosquitto
from tests.mqtt_helpers import Publisher, assert_exactly, envelope
from tests.test_ws_transport import OPEN, NtfyStub, msg


def raise_once(real: Callable[..., Any], exc: Exception, when: Callable[..., bool]) -> Any:
    """``real`` that raises ``exc`` the first time ``when(*args)`` holds, then behaves."""
    fired = []

    def patched(*args: Any, **kw: Any) -> Any:
        if not fired and when(*args, **kw):
            fired.append(True)
            raise exc
        return real(*args, **kw)

    patched.fired = fired  # type: ignore[attr-defined]
    return patched


class Sink:
    """Stores like the service does (messages, cursor, rejected); can fail once on demand."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.fail_next: Exception | None = None

    async def __call__(self, batch: Batch) -> None:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        await asyncio.to_thread(
            self.store.insert_batch, batch.messages, source=batch.source, cursor=batch.cursor,
            redelivery=batch.redelivery, rejected=batch.rejected, cursor_id=batch.last_id,
        )  # fmt: skip

    def ids(self) -> list[str]:
        return [s.message.id for s in self.store.query(newest=False)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    st = Store(tmp_path / "agent.db").open()
    yield st
    st.close()


async def until(cond: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    try:
        async with asyncio.timeout(timeout):
            while not cond():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


def errors(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger and r.levelno >= logging.ERROR]


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# --- WebSocket ---------------------------------------------------------------------------------

FRAMES = [msg(i) for i in (1, 2, 3)]


def replaying(stub: NtfyStub) -> Callable[[ServerConnection], Any]:
    """An ntfy server's subscription: everything after ``since=<id>`` (all for a time)."""

    async def script(ws: ServerConnection) -> None:
        since = stub.since(len(stub.paths) - 1)
        ids = [f"m{i:05d}" for i in (1, 2, 3)]
        start = ids.index(since) + 1 if since in ids else 0
        await ws.send(OPEN)
        for frame in FRAMES[start:]:
            await ws.send(frame)
        await ws.wait_closed()

    return script


@pytest.fixture
async def stub() -> AsyncIterator[NtfyStub]:
    s = NtfyStub([])
    async with serve(s._handler, "127.0.0.1", 0) as server:
        s.port = next(iter(server.sockets)).getsockname()[1]
        s.scripts = [replaying(s) for _ in range(10)]
        yield s


def ws_cfg(tmp_path: Path) -> AgentConfig:
    cfg = config.load({}, env={"PUSHAGENT_HOME": str(tmp_path / "home")})
    return replace(cfg, ws=WsConfig(keepalive=5.0, connect_timeout=2.0))


async def _ws_case(
    stub: NtfyStub, store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    sink: Sink, task_name: str,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, logger="pushagent.ws")
    t = WsTransport(f"http://127.0.0.1:{stub.port}", ws_cfg(tmp_path), topics=("alerts",),
                    store=store)  # fmt: skip
    task = asyncio.create_task(t.run(sink))
    try:
        await until(lambda: len(stub.paths) >= 2, what="a reconnect after the failure")
        await until(lambda: len(sink.ids()) == 3, what="all three messages stored")
        await until(lambda: t.state == "connected", what="connected again")
    finally:
        await stop(task)
    assert_exactly(sink.ids(), ["m00001", "m00002", "m00003"])
    logged = errors(caplog, "pushagent.ws")
    assert logged, "no ERROR logged for the failed task"
    assert f"the {task_name} task failed" in logged[0].getMessage()
    assert logged[0].exc_info is not None  # with the exception


async def test_ws_reader_failure_ends_the_session_logged_and_reconnects(
    stub: NtfyStub, store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    patched = raise_once(ws_mod.parse_frame, ValueError("injected reader failure"),
                         lambda frame, **kw: "m00002" in str(frame))  # fmt: skip
    monkeypatch.setattr(ws_mod, "parse_frame", patched)
    await _ws_case(stub, store, tmp_path, caplog, Sink(store), "reader")
    assert patched.fired


async def test_ws_committer_failure_ends_the_session_logged_and_reconnects(
    stub: NtfyStub, store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = Sink(store)
    sink.fail_next = RuntimeError("injected committer failure")
    await _ws_case(stub, store, tmp_path, caplog, sink, "committer")
    assert sink.fail_next is None


async def test_ws_watchdog_failure_ends_the_session_logged_and_reconnects(
    stub: NtfyStub, store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    patched = raise_once(ws_mod.dead_after, ZeroDivisionError("injected watchdog failure"),
                         lambda *a: True)  # fmt: skip
    monkeypatch.setattr(ws_mod, "dead_after", patched)
    await _ws_case(stub, store, tmp_path, caplog, Sink(store), "watchdog")
    assert patched.fired


# --- MQTT ------------------------------------------------------------------------------------


async def _mqtt_case(
    mosquitto: Mosquitto, store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    sink: Sink, task_name: str, inject: Callable[[], None],
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, logger="pushagent.mqtt")
    cfg = config.load({}, env={"PUSHAGENT_HOME": str(tmp_path / "home")})
    t = MqttTransport(mosquitto.url, cfg, topics=("t/#",), client_id="owned-tasks")
    connects: list[str] = []
    t.on_state = lambda st: connects.append(st) if st == "connected" else None
    task = asyncio.create_task(t.run(sink))
    try:
        await until(lambda: connects, what="connected")
        inject()
        with Publisher(mosquitto.port) as pub:
            await asyncio.to_thread(pub.publish, "t/x", [envelope(1), envelope(2)])
            await until(lambda: len(connects) >= 2, what="a reconnect after the failure")
            await until(lambda: t.state == "connected", what="connected again")
            await asyncio.to_thread(pub.publish, "t/x", [envelope(3)])
        await until(lambda: len(sink.ids()) == 3, what="all three messages stored")
    finally:
        await stop(task)
    assert_exactly(sink.ids(), ["m00001", "m00002", "m00003"])
    logged = errors(caplog, "pushagent.mqtt")
    assert logged, "no ERROR logged for the failed task"
    assert f"the {task_name} " in logged[0].getMessage() and "failed" in logged[0].getMessage()
    assert logged[0].exc_info is not None


async def test_mqtt_reader_failure_ends_the_session_logged_and_reconnects(
    mosquitto: Mosquitto, store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    patched = raise_once(PahoConn._readable, OSError("injected reader failure"), lambda s: True)

    def inject() -> None:
        monkeypatch.setattr(PahoConn, "_readable", patched)

    await _mqtt_case(mosquitto, store, tmp_path, caplog, Sink(store), "reader", inject)
    assert patched.fired


async def test_mqtt_committer_failure_ends_the_session_logged_and_reconnects(
    mosquitto: Mosquitto, store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = Sink(store)

    def inject() -> None:
        sink.fail_next = RuntimeError("injected committer failure")

    await _mqtt_case(mosquitto, store, tmp_path, caplog, sink, "committer", inject)
    assert sink.fail_next is None


async def test_mqtt_watchdog_failure_ends_the_session_logged_and_reconnects(
    mosquitto: Mosquitto, store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # only the transport's client: the test's publisher runs paho's own loop, which calls it too
    patched = raise_once(paho.Client.loop_misc, RuntimeError("injected watchdog failure"),
                         lambda c: getattr(c, "_client_id", b"") == b"owned-tasks")  # fmt: skip

    def inject() -> None:
        monkeypatch.setattr(paho.Client, "loop_misc", patched)

    await _mqtt_case(mosquitto, store, tmp_path, caplog, Sink(store), "watchdog", inject)
    assert patched.fired


async def test_ws_reader_failure_against_the_real_relay_reconnects_and_loses_nothing(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from tests.relay import Relay

    caplog.set_level(logging.INFO, logger="pushagent.ws")
    patched = raise_once(ws_mod.parse_frame, ValueError("injected reader failure"),
                         lambda frame, **kw: "honest 2" in str(frame))  # fmt: skip
    monkeypatch.setattr(ws_mod, "parse_frame", patched)
    relay = Relay(tmp_path / "relay").start()
    sink = Sink(store)
    t = WsTransport(relay.url, ws_cfg(tmp_path), topics=("alerts",), store=store)
    connects: list[str] = []
    t.on_state = lambda st: connects.append(st) if st == "connected" else None
    task = asyncio.create_task(t.run(sink))
    try:
        await until(lambda: connects, what="subscribed")
        ids = [(await asyncio.to_thread(relay.publish, "alerts", f"honest {i}"))["id"]
               for i in (1, 2, 3)]  # fmt: skip
        await until(lambda: len(connects) >= 2, what="a reconnect after the reader failed")
        await until(lambda: len(sink.ids()) == 3, what="all three stored")
    finally:
        await stop(task)
        assert relay.stop() == 0
    assert patched.fired
    assert_exactly(sink.ids(), ids)
    logged = errors(caplog, "pushagent.ws")
    assert logged and "the reader task failed" in logged[0].getMessage()
