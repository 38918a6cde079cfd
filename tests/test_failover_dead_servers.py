"""Failover past servers that do not answer at all (issue 13: a fresh agent and a NATS cluster
with a node down took 10.9-15.7 s to connect, 10 s of it ``ws.failover_after`` spent on the
dead node first in ``--server``; once it went back from the live node, which was refusing
SUBSCRIBEs, to the dead one, and did not connect within 30 s).

* A server that refuses TCP connections and has never been connected is passed over as soon
  as its first attempt failed (a real agent process: well under ``failover_after``).
* After ``failover_after``, the agent moves only to a server that answers a TCP connect: a
  server that is reachable but not (yet) letting it in is kept while the others are dead.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agent import config
from agent.config import WsConfig
from agent.servers import Candidate
from agent.store import OutboxItem
from agent.transports import BatchSink, ConnState, Transport
from agent.transports.failover import FailoverTransport
from tests.helpers import free_port, wait_for
from tests.mosquitto import Mosquitto
from tests.mqtt_helpers import Agent


def test_a_dead_first_server_costs_well_under_failover_after(
    mosquitto: Mosquitto, home: Path
) -> None:
    dead = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    started = time.monotonic()
    agent = Agent(home, dead, "--server", mosquitto.url).start(wait_connected=False)
    try:
        wait_for(lambda: agent.status().get("state") == "connected", timeout=30,
                 what=f"connected (log: {agent.log()[-1500:]})")  # fmt: skip
        took = time.monotonic() - started
        assert str(agent.status().get("server")).endswith(f":{mosquitto.port}")
        # failover_after is 10 s; the agent's own start (imports, store) is ~1-2 s here
        assert took < 5.0, f"{took:.1f} s to get past a dead server"
        assert "does not answer; trying the next server" in agent.log()
    finally:
        assert agent.stop() == 0


@pytest.fixture
def listening() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog) and never says a word."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])


class _Stuck:
    """A child that never gets connected, as against a broker that refuses every SUBSCRIBE."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.state: ConnState = "connecting"
        self.last_error: str | None = "subscription refused for now"

    async def run(self, sink: BatchSink) -> None:
        await asyncio.Event().wait()

    async def publish(self, item: OutboxItem) -> None:
        raise AssertionError("not connected")


class _Verdicts(FailoverTransport):
    """Records each "should the child make way?" verdict, to wait for them, not sleep."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.verdicts: list[tuple[float, bool]] = []

    async def _give_up(self, pick: Candidate, child: Transport, *args: Any, **kw: Any) -> bool:
        verdict = await super()._give_up(pick, child, *args, **kw)
        self.verdicts.append((time.monotonic(), verdict))
        return verdict


async def test_after_failover_after_a_reachable_server_is_kept_while_the_others_are_dead(
    listening: int, tmp_path: Path
) -> None:
    cfg = config.load({}, env={"PUSHAGENT_HOME": str(tmp_path / "home")})
    cfg = replace(cfg, ws=WsConfig(failover_after=0.5, recheck=30))
    reachable, dead = f"mqtt://127.0.0.1:{listening}", f"mqtt://127.0.0.1:{free_port()}"
    used: list[str] = []
    fo = _Verdicts([reachable, dead], _Stuck, cfg)
    fo.on_switch = used.append
    started = time.monotonic()
    task = asyncio.create_task(fo.run(lambda batch: asyncio.sleep(0)))
    try:
        async with asyncio.timeout(20):
            # a switch, or three verdicts well past failover_after
            while len(used) < 2 and sum(t - started > 1.5 for t, _ in fo.verdicts) < 3:
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert used == [reachable]
    assert not any(v for _, v in fo.verdicts)
