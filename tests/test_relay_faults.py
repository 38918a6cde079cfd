"""Fault tests: SIGKILL of the relay in the middle of a publish burst loses nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from tests.relay import Relay


@pytest.mark.slow
async def test_sigkill_during_burst_subscriber_resumes_with_since_and_misses_nothing(
    tmp_path: Path,
) -> None:
    relay = Relay(tmp_path).start()
    t = "burst"
    accepted: list[str] = []
    seen: list[str] = []

    async def subscriber(s: aiohttp.ClientSession, since: str) -> None:
        async with s.get(f"{relay.url}/{t}/json?since={since}") as resp:
            async for line in resp.content:
                ev = json.loads(line)
                if ev["event"] == "message":
                    seen.append(ev["id"])

    async def publisher(s: aiohttp.ClientSession) -> None:
        i = 0
        while True:
            try:
                async with s.put(f"{relay.url}/{t}", data=f"m{i}".encode()) as r:
                    if r.status == 200:
                        accepted.append((await r.json())["id"])
            except aiohttp.ClientError:
                return  # the relay died under us: what got a 200 is what counts
            i += 1

    async with aiohttp.ClientSession() as s:
        sub = asyncio.create_task(subscriber(s, "all"))
        pub = asyncio.create_task(publisher(s))
        async with asyncio.timeout(30):
            while len(accepted) < 300:
                await asyncio.sleep(0.01)
        relay.kill()  # SIGKILL mid-burst
        await pub
        with pytest.raises(aiohttp.ClientError):
            await sub  # the stream broke
        last = seen[-1]
        relay.start()
        after_restart = relay.publish(t, "after")["id"]
        sub = asyncio.create_task(subscriber(s, last))
        async with asyncio.timeout(30):
            while after_restart not in seen:
                await asyncio.sleep(0.02)
        sub.cancel()
    assert relay.stop() == 0
    assert len(seen) == len(set(seen)), "a message was delivered twice"
    missing = set(accepted) - set(seen)
    assert not missing, f"{len(missing)} accepted messages never reached the subscriber"
    assert len(accepted) >= 300
