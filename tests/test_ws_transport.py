"""The WebSocket transport against a tiny, scriptable (and hostile) ntfy server in the test.

The server is a real websockets server on 127.0.0.1; the agent side is the real transport with
a real store as its sink. Each connection runs the next "script" from a list, and the server
records the path every subscription asked for, so the tests can see ``since=`` at work.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from agent import config
from agent.config import AgentConfig, WsConfig
from agent.errors import AuthError, ConnectionLost, ServerRefused
from agent.store import Store
from agent.transports import Batch
from agent.transports.ws import WsTransport
from tests.netproxy import NetProxy

Script = Callable[[ServerConnection], Awaitable[None]]


def msg(i: int, topic: str = "alerts", **extra: Any) -> str:
    return json.dumps({"id": f"m{i:05d}", "time": 1700000000 + i, "event": "message",
                       "topic": topic, "message": f"text {i}", **extra})  # fmt: skip


OPEN = json.dumps({"id": "o", "time": 1, "event": "open", "topic": "alerts"})


async def hold(ws: ServerConnection) -> None:
    await ws.wait_closed()


@dataclass
class NtfyStub:
    scripts: list[Script]
    paths: list[str] = field(default_factory=list)
    reject: int | None = None
    server: Server | None = None
    port: int = 0

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.paths.append(ws.request.path)
        script = self.scripts.pop(0) if self.scripts else hold
        await script(ws)

    def _process(self, ws: ServerConnection, request: Request) -> Response | None:
        if self.reject is not None:
            body = b'{"error":"unauthorized"}'
            return Response(self.reject, "Unauthorized", Headers(), body)
        return None

    def since(self, n: int) -> str:
        return self.paths[n].split("since=", 1)[1] if "since=" in self.paths[n] else ""


@pytest.fixture
async def stub() -> AsyncIterator[NtfyStub]:
    s = NtfyStub([])
    server = await serve(s._handler, "127.0.0.1", 0, process_request=s._process)
    s.server = server
    s.port = next(iter(server.sockets)).getsockname()[1]
    try:
        yield s
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    st = Store(tmp_path / "agent.db").open()
    yield st
    st.close()


def make_cfg(tmp_path: Path, **ws: Any) -> AgentConfig:
    cfg = config.load({}, env={"PUSHAGENT_HOME": str(tmp_path / "home")})
    return replace(cfg, ws=WsConfig(**{"keepalive": 5.0, "connect_timeout": 2.0, **ws}))


class Sink:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.batches: list[Batch] = []

    async def __call__(self, batch: Batch) -> None:
        self.batches.append(batch)
        await asyncio.to_thread(
            self.store.insert_batch, batch.messages, source=batch.source, cursor=batch.cursor
        )

    def ids(self) -> list[str]:
        return [s.message.id for s in self.store.query(newest=False)]


async def until(cond: Callable[[], object], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.02)


def transport(stub: NtfyStub, cfg: AgentConfig, store: Store, **kw: Any) -> WsTransport:
    return WsTransport(f"http://127.0.0.1:{stub.port}", cfg, topics=("alerts", "b"),
                       store=store, **kw)  # fmt: skip


async def running(t: WsTransport, sink: Sink) -> asyncio.Task[None]:
    return asyncio.create_task(t.run(sink))


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# --- the happy path and since= ------------------------------------------------------------


async def test_batches_commit_with_cursor_and_reconnect_resumes_from_it(
    stub: NtfyStub, store: Store, tmp_path: Path
) -> None:
    async def burst(ws: ServerConnection) -> None:
        await ws.send(OPEN)
        for i in range(2000):
            await ws.send(msg(i))
        await ws.close()

    stub.scripts = [burst]
    sink = Sink(store)
    t = transport(stub, make_cfg(tmp_path), store)
    task = await running(t, sink)
    await until(lambda: len(stub.paths) >= 2)
    await stop(task)
    assert sink.ids() == [f"m{i:05d}" for i in range(2000)]
    # one WebSocket for both topics; the first-ever subscription asks since=<its start time>
    assert stub.paths[0].startswith("/alerts,b/ws?since=") and stub.since(0).isdigit()
    assert stub.since(1) == "m01999"
    assert store.get_cursor(t.source, "alerts,b") == "m01999"
    assert len(sink.batches) < 1000, "messages arriving together must commit together"
    assert t.state == "offline"


async def test_rejected_message_is_counted_and_the_rest_carry_on(
    stub: NtfyStub, store: Store, tmp_path: Path
) -> None:
    async def mixed(ws: ServerConnection) -> None:
        await ws.send(OPEN)
        await ws.send(msg(1))
        await ws.send(msg(2, priority="purple"))
        await ws.send(msg(3))
        await ws.wait_closed()

    stub.scripts = [mixed]
    sink = Sink(store)
    task = await running(transport(stub, make_cfg(tmp_path), store), sink)
    await until(lambda: len(sink.ids()) == 2)
    await stop(task)
    assert sink.ids() == ["m00001", "m00003"]
    assert sum(len(b.rejected) for b in sink.batches) == 1


# --- hostile servers ------------------------------------------------------------------------


async def _recovers_after(
    bad: Script, stub: NtfyStub, store: Store, tmp_path: Path, **ws: Any
) -> WsTransport:
    """Script: open + m1, then ``bad``; then a good server. Nothing lost, resumed from m1."""

    async def first(ws_: ServerConnection) -> None:
        await ws_.send(OPEN)
        await ws_.send(msg(1))
        await bad(ws_)

    async def good(ws_: ServerConnection) -> None:
        await ws_.send(OPEN)
        await ws_.send(msg(2))
        await ws_.wait_closed()

    stub.scripts = [first, good]
    sink = Sink(store)
    t = transport(stub, make_cfg(tmp_path, **ws), store)
    task = await running(t, sink)
    await until(lambda: sink.ids() == ["m00001", "m00002"])
    assert t.state == "connected"
    await stop(task)
    assert stub.since(1) == "m00001"
    return t


async def test_garbage_frame_drops_the_link_and_resumes(
    stub: NtfyStub, store: Store, tmp_path: Path
) -> None:
    async def garbage(ws: ServerConnection) -> None:
        await ws.send("<html>proxy error</html>")
        await ws.wait_closed()

    t = await _recovers_after(garbage, stub, store, tmp_path)
    assert t.last_error is not None and "not JSON" in t.last_error


async def test_ten_megabyte_frame_is_refused_without_loss(
    stub: NtfyStub, store: Store, tmp_path: Path
) -> None:
    async def huge(ws: ServerConnection) -> None:
        await ws.send("x" * (10 * 1024 * 1024))
        await ws.wait_closed()

    t = await _recovers_after(huge, stub, store, tmp_path)
    assert t.last_error is not None and "larger than ws.max_frame" in t.last_error


async def test_close_mid_frame_resumes(stub: NtfyStub, store: Store, tmp_path: Path) -> None:
    async def mid_frame(ws: ServerConnection) -> None:
        await asyncio.sleep(0.2)  # let m1 leave before the raw bytes
        # A text frame header announcing 200 bytes, then 3 of them, then the socket goes.
        ws.transport.write(b"\x81\x7e\x00\xc8abc")
        ws.transport.abort()

    t = await _recovers_after(mid_frame, stub, store, tmp_path)
    assert t.last_error is not None and "without a close frame" in t.last_error


async def test_stalled_link_is_dead_after_one_and_a_half_keepalives_and_a_ping(
    stub: NtfyStub, store: Store, tmp_path: Path
) -> None:
    """A link that stops forwarding (sockets open, nothing moves) is found and replaced: the
    last frame starts 1.5 keepalives of silence, then one ping gets its wait, then the link is
    declared dead (the transport leaves ``connected``) — not earlier, and not much later."""
    keepalive = 1.0  # long enough that the slack below cannot hide a wrong factor
    silent_since: list[float] = []
    changes: list[tuple[str, float]] = []
    loop = asyncio.get_running_loop()

    async def first(ws: ServerConnection) -> None:
        await ws.send(OPEN)
        await ws.send(msg(1))
        silent_since.append(loop.time())  # the client cannot have heard anything later
        await ws.wait_closed()

    async def good(ws: ServerConnection) -> None:
        await ws.send(OPEN)
        await ws.send(msg(2))
        await ws.wait_closed()

    stub.scripts = [first, good]
    sink = Sink(store)
    with NetProxy("127.0.0.1", stub.port) as proxy:
        t = WsTransport(f"http://127.0.0.1:{proxy.port}", make_cfg(tmp_path, keepalive=keepalive),
                        topics=("alerts", "b"), store=store)  # fmt: skip
        t.on_state = lambda state: changes.append((state, loop.time()))
        task = await running(t, sink)
        await until(lambda: sink.ids() == ["m00001"])
        proxy.stall()  # this link only: the reconnect gets through
        await until(lambda: sink.ids() == ["m00001", "m00002"])
        await stop(task)
    assert t.last_error is not None and "no answer to a ping: dead link" in t.last_error
    assert stub.since(1) == "m00001"
    states = [state for state, _ in changes]
    assert states[:3] == ["connecting", "connected", "connecting"], states
    declared = changes[2][1] - silent_since[0]
    silence = 1.5 * keepalive
    ping_wait = max(1.0, silence / 3)  # a third of the deadline, at least a second (ws.py)
    slack = 0.4  # the loop's latency on a loaded 2-core box (measured idle: ~2 ms)
    assert silence + ping_wait <= declared <= silence + ping_wait + slack, declared


async def test_quiet_server_that_answers_pings_is_not_cut(
    stub: NtfyStub, store: Store, tmp_path: Path
) -> None:
    """A server whose keepalive interval is longer than ours stays connected."""

    async def quiet(ws: ServerConnection) -> None:
        await ws.send(OPEN)
        await asyncio.sleep(2.5)  # > 3 deadlines of 0.6 s, no frame at all
        await ws.send(msg(9))
        await ws.wait_closed()

    stub.scripts = [quiet]
    sink = Sink(store)
    t = transport(stub, make_cfg(tmp_path, keepalive=0.4), store)
    task = await running(t, sink)
    await until(lambda: sink.ids() == ["m00009"])
    await stop(task)
    assert len(stub.paths) == 1 and t.last_error is None


async def test_server_that_never_sends_open(stub: NtfyStub, store: Store, tmp_path: Path) -> None:
    async def mute(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async def good(ws: ServerConnection) -> None:
        await ws.send(OPEN)
        await ws.send(msg(7))
        await ws.wait_closed()

    stub.scripts = [mute, good]
    sink = Sink(store)
    t = transport(stub, make_cfg(tmp_path, connect_timeout=0.5), store)
    errors: list[str | None] = []
    t.on_state = lambda state: errors.append(t.last_error)
    task = await running(t, sink)
    await until(lambda: sink.ids() == ["m00007"])
    await stop(task)
    assert len(stub.paths) == 2
    assert any(e and "no 'open' event within" in e for e in errors), errors


async def test_401_stops_with_an_instruction_to_log_in(
    stub: NtfyStub, store: Store, tmp_path: Path
) -> None:
    stub.reject = 401
    t = transport(stub, make_cfg(tmp_path), store, fatal_auth=True, token="s3cret-token")
    with pytest.raises(AuthError, match=r"pushagent login http://127\.0\.0\.1:\d+ --token-stdin"):
        await t.run(Sink(store))
    assert "s3cret" not in str(t.last_error)


async def test_401_stops_a_transport_never_accepted_and_one_accepted_before_waits(
    stub: NtfyStub, store: Store, tmp_path: Path
) -> None:
    """Refused before any connect: ``run`` raises (``pushagent run`` exits 2 with it). Once
    accepted, a refusal (a token revoked, a proxy mid-deploy) retries at the cap instead."""
    cfg = make_cfg(tmp_path)
    stub.reject = 401
    wanted = r"HTTP 401\): unauthorized \(no access token was sent\); run: pushagent login"
    with pytest.raises(ServerRefused, match=wanted):
        async with asyncio.timeout(10):
            await transport(stub, cfg, store).run(Sink(store))

    async def open_then_refuse(ws: ServerConnection) -> None:
        await ws.send(OPEN)
        stub.reject = 401
        await ws.close()

    stub.reject, stub.scripts = None, [open_then_refuse]
    t = transport(stub, cfg, store)
    task = await running(t, Sink(store))
    await until(lambda: t.retry_in == 60.0)
    assert t.state == "connecting" and "pushagent login" in str(t.last_error)
    await stop(task)


async def test_token_is_sent_as_bearer(stub: NtfyStub, store: Store, tmp_path: Path) -> None:
    seen: list[str | None] = []

    async def record(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen.append(ws.request.headers.get("Authorization"))
        await ws.send(OPEN)
        await ws.wait_closed()

    stub.scripts = [record]
    t = transport(stub, make_cfg(tmp_path), store, token="tk_abc")
    task = await running(t, Sink(store))
    await until(lambda: t.state == "connected")
    await stop(task)
    assert seen == ["Bearer tk_abc"]


# --- receipts -------------------------------------------------------------------------------


class _Receipts(BaseHTTPRequestHandler):
    posts: list[tuple[str, list[Any], str | None]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.posts.append((self.path, json.loads(body), self.headers.get("Authorization")))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


async def test_receipts_published_together_go_in_one_post(store: Store, tmp_path: Path) -> None:
    handler = type("H", (_Receipts,), {"posts": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        t = WsTransport(url, make_cfg(tmp_path), topics=("alerts",), store=store, token="tk")
        store.outbox_add("receipt", url, '{"id":"m1","state":"delivered","time":1}')
        store.outbox_add("receipt", url, '{"id":"m1","state":"clicked","time":2}')
        items = store.outbox_peek()
        with pytest.raises(ConnectionLost, match="not connected"):
            await t.publish(items[0])
        t.state = "connected"  # publishing needs no WebSocket; the state gate is what's tested
        await asyncio.gather(*(t.publish(i) for i in items))
        assert handler.posts == [
            ("/v1/receipts",
             [{"id": "m1", "state": "delivered", "time": 1},
              {"id": "m1", "state": "clicked", "time": 2}],
             "Bearer tk"),
        ]  # fmt: skip
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


async def test_changed_topic_list_resumes_from_the_sources_last_position(
    stub: NtfyStub, store: Store, tmp_path: Path
) -> None:
    async def one(ws: ServerConnection) -> None:
        await ws.send(OPEN)
        await ws.send(msg(1))
        await ws.wait_closed()

    stub.scripts = [one]
    sink = Sink(store)
    t = transport(stub, make_cfg(tmp_path), store)
    task = await running(t, sink)
    await until(lambda: sink.ids() == ["m00001"])
    await stop(task)
    wider = WsTransport(f"http://127.0.0.1:{stub.port}", make_cfg(tmp_path),
                        topics=("alerts", "b", "c"), store=store)  # fmt: skip
    task = await running(wider, sink)
    await until(lambda: len(stub.paths) == 2)
    await stop(task)
    assert stub.paths[1] == "/alerts,b,c/ws?since=m00001"
