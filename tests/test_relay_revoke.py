"""Revoking a token or narrowing its grant closes the streams it no longer allows.

A real relay process, the real ``edge-relay token`` CLI and hand edits of the auth file; real
WebSocket, SSE and JSON streams (aiohttp's client). Nothing but the relay's own watcher sees
the change: no request reaches the relay between the edit and the close.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from tests.relay import Relay
from tests.test_relay_auth import edge_relay

WITHIN = 5.0  # the contract: closed within 5 s of the change


def add(af: Path, name: str, *args: str) -> str:
    done = edge_relay("token", "--auth-file", str(af), "add", name, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class Stream:
    """One open subscription and the events it received."""

    def __init__(self, kind: str, resp: object) -> None:
        self.kind = kind
        self.resp = resp
        self.events: list[dict[str, object]] = []
        self.ended = asyncio.get_running_loop().create_future()
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            if isinstance(self.resp, aiohttp.ClientWebSocketResponse):
                while (frame := await self.resp.receive()).type == aiohttp.WSMsgType.TEXT:
                    self.events.append(json.loads(frame.data))
                if frame.type == aiohttp.WSMsgType.CLOSE:
                    self.ended.set_result((frame.data, frame.extra))
                else:
                    self.ended.set_result(frame.type)
                return
            assert isinstance(self.resp, aiohttp.ClientResponse)
            while line := await self.resp.content.readline():
                text = line.decode().strip()
                if self.kind == "sse" and text.startswith("data: "):
                    self.events.append(json.loads(text[6:]))
                elif self.kind == "json" and text:
                    self.events.append(json.loads(text))
            self.ended.set_result("eof")
        except Exception as exc:  # what the test asserts on
            self.ended.set_result(exc)

    def messages(self) -> list[object]:
        return [e["message"] for e in self.events if e["event"] == "message"]

    async def opened(self) -> None:
        await until(lambda: any(e["event"] == "open" for e in self.events), "open event")


async def until(cond: object, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def streams(relay: Relay) -> AsyncIterator[object]:
    async with aiohttp.ClientSession() as session:
        opened: list[Stream] = []

        async def open_(fmt: str, topics: str, token: str) -> Stream:
            headers = {"Authorization": f"Bearer {token}"}
            url = f"{relay.url}/{topics}/{fmt}"
            if fmt == "ws":
                resp: object = await session.ws_connect(url, headers=headers, autoclose=True)
            else:
                resp = await session.get(url, headers=headers)
                assert resp.status == 200  # type: ignore[attr-defined]
            s = Stream(fmt, resp)
            opened.append(s)
            await s.opened()
            return s

        try:
            yield open_
        finally:
            for s in opened:
                s.task.cancel()
                await asyncio.gather(s.task, return_exceptions=True)
                if isinstance(s.resp, aiohttp.ClientWebSocketResponse):
                    await s.resp.close()
                else:
                    s.resp.close()  # type: ignore[attr-defined]


async def ended_within(stream: Stream, seconds: float) -> object:
    return await asyncio.wait_for(asyncio.shield(stream.ended), seconds)


async def test_revoking_a_token_closes_its_ws_sse_and_json_streams(tmp_path: Path) -> None:
    af = tmp_path / "auth.json"
    phone = add(af, "phone", "--read", "a", "b")
    other = add(af, "other", "--read", "a")
    writer = add(af, "pub", "--write", "*")
    relay = Relay(tmp_path / "r", args=["--auth-file", str(af)]).start()
    try:
        async with streams(relay) as open_:
            ws = await open_("ws", "a", phone)
            sse = await open_("sse", "a,b", phone)
            js = await open_("json", "b", phone)
            kept = await open_("ws", "a", other)
            kept_json = await open_("json", "a", other)
            done = await asyncio.to_thread(edge_relay, "token", "--auth-file", str(af),
                                           "revoke", "phone")  # fmt: skip
            assert done.returncode == 0, done.stderr
            started = time.monotonic()
            assert await ended_within(ws, WITHIN) == (1008, "token revoked")
            assert await ended_within(sse, WITHIN - (time.monotonic() - started)) == "eof"
            assert await ended_within(js, WITHIN - (time.monotonic() - started)) == "eof"
            # the other token's streams stay open and keep receiving
            relay.publish("a", "after the revocation", Authorization=f"Bearer {writer}")
            await until(lambda: kept.messages() == ["after the revocation"], "kept ws message")
            await until(lambda: kept_json.messages() == ["after the revocation"], "kept json")
            assert not kept.ended.done() and not kept_json.ended.done()
            assert ws.messages() == sse.messages() == js.messages() == []
    finally:
        assert relay.stop() == 0


async def test_narrowing_a_grant_closes_only_the_stream_it_no_longer_allows(
    tmp_path: Path,
) -> None:
    af = tmp_path / "auth.json"
    phone = add(af, "phone", "--read", "a", "b")
    writer = add(af, "pub", "--write", "*")
    relay = Relay(tmp_path / "r", args=["--auth-file", str(af)]).start()
    try:
        async with streams(relay) as open_:
            on_b = await open_("ws", "b", phone)
            on_ab = await open_("sse", "a,b", phone)
            on_a = await open_("json", "a", phone)
            on_a_ws = await open_("ws", "a", phone)
            data = json.loads(af.read_text())
            data["tokens"]["phone"]["read"] = ["a"]  # an operator's hand edit
            af.write_text(json.dumps(data))
            assert await ended_within(on_b, WITHIN) == (1008, "read access to 'b' withdrawn")
            assert await ended_within(on_ab, WITHIN) == "eof"
            relay.publish("a", "still allowed", Authorization=f"Bearer {writer}")
            await until(lambda: on_a.messages() == ["still allowed"], "json on a")
            await until(lambda: on_a_ws.messages() == ["still allowed"], "ws on a")
            assert not on_a.ended.done() and not on_a_ws.ended.done()
    finally:
        assert relay.stop() == 0
