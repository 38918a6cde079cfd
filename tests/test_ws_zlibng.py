"""The relay deflates WebSocket messages with zlib-ng when it is installed (edge_relay.deflate),
and every client still inflates them: the websockets client (the agent's) and aiohttp's, each
with and without permessage-deflate, against a real relay process. zlib-ng comes with the dev
extra (``relay-fast``), so these run wherever the suite does (the benchmark:
bench/ws_compression.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

# zlib-ng is in the dev extra (relay-fast): a missing one fails here, it never skips.
import zlib_ng  # noqa: F401
from websockets.asyncio.client import connect

from tests.helpers import child_env, wait_for
from tests.relay import Relay, unique_topic
from tests.test_compression import publish_many, typical

N = 60


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    r = Relay(tmp_path_factory.mktemp("zlibng")).start()
    try:
        yield r
    finally:
        r.stop()


def _texts(frames: list[str]) -> list[str]:
    return [e["message"] for e in map(json.loads, frames) if e["event"] == "message"]


async def _websockets(url: str, deflate: bool) -> tuple[list[str], str]:
    frames: list[str] = []
    async with connect(url, compression="deflate" if deflate else None) as ws:
        offered = str(ws.response.headers.get("Sec-WebSocket-Extensions", ""))
        while len(_texts(frames)) < N:
            frames.append(str(await ws.recv()))
    return _texts(frames), offered


async def _aiohttp(url: str, deflate: bool) -> tuple[list[str], str]:
    frames: list[str] = []
    async with aiohttp.ClientSession() as s, s.ws_connect(url, compress=15 if deflate else 0) as ws:
        offered = ws._response.headers.get("Sec-WebSocket-Extensions", "")
        while len(_texts(frames)) < N:
            frames.append(await ws.receive_str())
    return _texts(frames), offered


@pytest.mark.parametrize("client", ["websockets", "aiohttp"])
@pytest.mark.parametrize("deflate", [True, False])
async def test_zlib_ng_deflated_backlog_inflates_in_every_client(
    relay: Relay, client: str, deflate: bool
) -> None:
    topic = unique_topic("zng")
    publish_many(relay, topic, N)
    url = relay.url.replace("http", "ws", 1) + f"/{topic}/ws?since=all"
    texts, offered = await (_websockets if client == "websockets" else _aiohttp)(url, deflate)
    assert texts == [typical(i)[0] for i in range(N)]
    assert ("permessage-deflate" in offered) == deflate, offered
    assert "permessage-deflate with zlib-ng" in relay.log.read_text()


def test_edgepush_zlib_stdlib_keeps_stdlib_zlib(tmp_path: Path) -> None:
    r = Relay(tmp_path, env=child_env(EDGEPUSH_ZLIB="stdlib")).start()
    try:
        wait_for(lambda: "permessage-deflate with" in r.log.read_text(), timeout=10,
                 what="the relay's deflate backend line")  # fmt: skip
        assert "permessage-deflate with zlib\n" in r.log.read_text()
    finally:
        r.stop()
