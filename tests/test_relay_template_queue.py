"""The relay's template renders (``edge_relay.renders``: one worker thread, one render at a
time) against a client that crowds them: a real relay process, two client addresses.

An honest templated publish is answered about as it would be alone however many slow
templates another client has sent: a client's renders wait for each other, not everyone's.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from tests.relay import Relay, module_relay

pytestmark = pytest.mark.timeout(120)

BIG = json.dumps({"l": [1] * 10_000}).encode()
SLOW = '{{range $i, $e := .l}}{{if lt $i 300}}{{len (printf "%v" $.l)}}{{end}}{{end}}'
"""Runs into the render's time bound (0.2 s of rendering): 40045."""
HONEST = json.dumps({"l": list(range(5_000))}).encode()  # 29 KiB, under ntfy's 32 KiB
EACH = "{{range .l}}{{if lt . 1.0}}{{.}}{{end}}{{end}}"
"""~40 ms alone on this machine (5,000 turns): within the bound, as a long webhook list is."""


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    yield from module_relay(tmp_path_factory, "relay")


def topic() -> str:
    return "tq" + uuid.uuid4().hex[:12]


async def _honest(relay: Relay, t: str, source: str) -> tuple[float, int, Any]:
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    query = urlencode({"tpl": "yes", "m": EACH})
    async with aiohttp.ClientSession(connector=connector) as s:
        start = time.monotonic()
        async with s.post(f"{relay.url}/{t}?{query}", data=HONEST) as r:
            return time.monotonic() - start, r.status, await r.json()


async def test_an_honest_template_waits_for_no_queue_of_another_clients_renders(
    relay: Relay,
) -> None:
    t = topic()
    alone, status, answer = await _honest(relay, t, "127.0.0.3")
    assert status == 200, answer
    query = urlencode({"tpl": "yes", "m": SLOW})
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0), limit=0)
    async with aiohttp.ClientSession(connector=connector) as s:

        async def slow() -> int:
            async with s.post(f"{relay.url}/{t}?{query}", data=BIG) as r:
                await r.read()
                return r.status

        hostile = [asyncio.ensure_future(slow()) for _ in range(20)]  # 20 x 0.2 s of renders
        await asyncio.sleep(0.5)  # all sent, their renders under way or waiting
        wait, status, answer = await _honest(relay, t, "127.0.0.3")
        assert set(await asyncio.gather(*hostile)) == {400}
    assert status == 200, answer
    assert wait < 1.0, f"the honest templated publish waited {wait:.2f} s ({alone:.3f} s alone)"
    assert [m["message"] for m in relay.poll(t)] == ["0", "0"]
