"""Failover across servers with ``auto``: real relay processes, real mDNS, real WebSockets.

The relays advertise themselves with zeroconf on this machine; ``ws.relay_name`` limits the
agent to the relays of this test (other tests may run relays at the same time).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from agent import config
from agent.config import AgentConfig, WsConfig
from agent.discovery import SERVICE
from agent.servers import Candidate
from agent.store import Store
from agent.transports import Batch, Transport, failover
from agent.transports.failover import FailoverTransport
from agent.transports.ws import WsTransport
from tests.helpers import free_port, wait_for
from tests.mosquitto import Mosquitto
from tests.mqtt_helpers import Publisher, envelope
from tests.relay_proc import AgentProc, RelayProc
from tests.relay_proc import Publisher as RelayPublisher

pytestmark = pytest.mark.slow
TOPIC = "fo"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "agent.db") as st:
        yield st


def _cfg(tmp_path: Path, relay_name: str) -> AgentConfig:
    cfg = config.load({}, env={"PUSHAGENT_HOME": str(tmp_path / "home")})
    ws = WsConfig(keepalive=5, connect_timeout=3, failover_after=2, recheck=1,
                  relay_name=relay_name)  # fmt: skip
    return replace(cfg, ws=ws, topics=(TOPIC,))


async def _until(cond: object, what: str, timeout: float = 40) -> None:
    async with asyncio.timeout(timeout):
        while not cond():  # type: ignore[operator]
            await asyncio.sleep(0.05)


class _Counted(FailoverTransport):
    """A FailoverTransport that records each re-check's verdict ("is a better server there?").

    A test asserting that something did NOT happen (no switch) waits for a number of these,
    each after the fact it would have caused, instead of sleeping and hoping enough ran."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.rechecks: list[bool] = []

    async def _better_exists(self, pick: Candidate) -> bool:
        better = await super()._better_exists(pick)
        self.rechecks.append(better)
        return better


def _publish(relay: RelayProc, n: int, tag: str) -> list[str]:
    pub = RelayPublisher(relay.port)
    try:
        return [pub.publish(TOPIC, f"{tag} {i}") for i in range(n)]
    finally:
        pub.close()


async def test_auto_relay_fails_over_to_the_next_server_and_returns(
    tmp_path: Path, store: Store
) -> None:
    lan = RelayProc(tmp_path / "lan", advertise=True, keepalive=2).start()
    backup = RelayProc(tmp_path / "backup", keepalive=2).start()
    cfg = _cfg(tmp_path, f"*-{lan.port}")
    switches: list[str] = []

    def make(url: str) -> Transport:
        return WsTransport(url, cfg, topics=cfg.topics, store=store)

    async def sink(batch: Batch) -> None:
        await asyncio.to_thread(
            store.insert_batch, batch.messages, source=batch.source, cursor=batch.cursor
        )

    ft = FailoverTransport(["auto", backup.url], make, cfg)
    ft.on_switch = switches.append
    task = asyncio.create_task(ft.run(sink))
    try:
        await _until(lambda: ft.url == lan.url and ft.state == "connected", "on the LAN relay")
        want = await asyncio.to_thread(_publish, lan, 20, "lan")
        await _until(lambda: store.count() == 20, "first 20")

        lan.kill()
        await _until(lambda: ft.url == backup.url and ft.state == "connected", "on the backup")
        want += await asyncio.to_thread(_publish, backup, 20, "backup")
        await _until(lambda: store.count() == 40, "backup's 20")

        lan.start()  # same port, same store: it comes back and announces itself
        want += await asyncio.to_thread(_publish, lan, 20, "lan again")
        await _until(lambda: ft.url == lan.url and ft.state == "connected", "back on the LAN")
        await _until(lambda: store.count() == 60, "all 60")
        ids = [s.message.id for s in store.query(newest=False)]
        assert Counter(ids) == Counter(want)
        assert switches == [lan.url, backup.url, lan.url]  # found at once, no detour
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        lan.stop()
        backup.stop()


async def test_two_relays_one_is_picked_and_kept(tmp_path: Path, store: Store) -> None:
    a = RelayProc(tmp_path / "a", advertise=True, keepalive=2).start()
    b = RelayProc(tmp_path / "b", advertise=True, keepalive=2).start()
    cfg = _cfg(tmp_path, f"*-{a.port},*-{b.port}")
    names = {a.url, b.url}
    switches: list[str] = []

    async def sink(batch: Batch) -> None:
        return None

    def make(url: str) -> Transport:
        return WsTransport(url, cfg, topics=cfg.topics, store=store)

    ft = _Counted(["auto"], make, cfg)
    ft.on_switch = switches.append
    task = asyncio.create_task(ft.run(sink))
    try:
        await _until(lambda: ft.state == "connected" and ft.url in names, "on one relay")
        seen = len(ft.rechecks)
        # five re-checks with fresh connect-time measurements; a flap would follow one of them
        await _until(lambda: len(ft.rechecks) >= seen + 5, "five re-checks")
        assert ft.rechecks[seen:] == [False] * (len(ft.rechecks) - seen), ft.rechecks
        assert len(switches) == 1, f"flapped: {switches}"
        assert ft.url == switches[0] and ft.state == "connected"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        a.stop()
        b.stop()


def _status(home: Path) -> dict[str, object]:
    try:
        data = json.loads((home / "data" / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def test_relay_to_broker_and_back_with_a_stream_running_throughout(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """``[auto, mqtt://broker]``: relay up → killed → agent on the broker → relay back → agent
    returns; a stream published to the broker the whole time arrives complete, once."""
    relay = RelayProc(tmp_path / "relay", advertise=True, keepalive=2,
                      upstream=mosquitto.url, upstream_topics=[TOPIC]).start()  # fmt: skip
    home = tmp_path / "agent"
    home.mkdir()
    (home / "config.toml").write_text(
        f"[ws]\nkeepalive = 2\nconnect_timeout = 3\nfailover_after = 2\nrecheck = 1\n"
        f'relay_name = "*-{relay.port}"\n'
    )
    agent = AgentProc(home, ["--server", "auto", "--server", mosquitto.url, "--topic", TOPIC])
    n = 1500
    want = [f"s{i:05d}" for i in range(n)]
    published = 0
    try:
        agent.start()
        wait_for(lambda: _status(home).get("server") == relay.url
                 and _status(home).get("state") == "connected", timeout=30,
                 what=f"agent on the relay\n{agent.stderr()}")  # fmt: skip
        with Publisher(mosquitto.port) as pub:

            def publish_until(count: int) -> None:
                nonlocal published
                while published < count:
                    pub.publish(TOPIC, [envelope(published, "s")])
                    published += 1
                    time.sleep(0.004)

            publish_until(300)
            relay.kill()
            deadline = time.monotonic() + 30
            while _status(home).get("server") != mosquitto.url and time.monotonic() < deadline:
                publish_until(published + 5)
            assert _status(home).get("server") == mosquitto.url, agent.stderr()
            publish_until(published + 300)
            relay.start()
            deadline = time.monotonic() + 30
            while _status(home).get("server") != relay.url and time.monotonic() < deadline:
                publish_until(published + 5)
            assert _status(home).get("server") == relay.url, agent.stderr()
            publish_until(max(n, published + 200))
        want = [f"s{i:05d}" for i in range(published)]
        wait_for(lambda: set(agent.notified()) >= set(want), timeout=60, interval=0.2,
                 what=f"all {published} notified\n{agent.stderr()}")  # fmt: skip
        seen = agent.notified()
        dupes = [i for i, c in Counter(seen).items() if c > 1]
        assert not dupes, f"notified twice: {dupes[:5]}"
        assert sorted(seen) == want
        with Store(home / "data" / "pushagent.db") as st:
            sources = Counter(s.source for s in st.query(newest=False))
        assert sources[relay.url] > 0 and sources[mosquitto.url] > 0, sources
    finally:
        agent.stop()
        relay.stop()


async def test_advertised_relay_that_cannot_be_reached_is_passed_over(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relay advertised with an address nobody listens on: the agent uses the next server
    and does not try the dead advertisement on every tick (it is probed by each re-check and
    once more when the hold-off after a failed probe ends)."""
    closed = free_port()  # nothing listens here
    name = f"edge-relay-ghost-{closed}.{SERVICE}"
    info = AsyncServiceInfo(SERVICE, name, port=closed, parsed_addresses=["127.0.0.1"],
                            properties={"tls": "0"})  # fmt: skip
    zc = AsyncZeroconf(ip_version=IPVersion.V4Only)
    await zc.async_register_service(info)
    backup = RelayProc(tmp_path / "backup", keepalive=2).start()
    cfg = _cfg(tmp_path, f"*-{closed}")
    switches: list[str] = []

    async def sink(batch: Batch) -> None:
        return None

    ghost_probes: list[float] = []
    real_probe = failover.probe

    async def counted_probe(url: str, timeout: float = 2.0) -> float | None:
        if failover.host_port(url)[1] == closed:
            ghost_probes.append(time.monotonic())
        return await real_probe(url, timeout)

    monkeypatch.setattr(failover, "probe", counted_probe)
    ft = _Counted(
        ["auto", backup.url], lambda u: WsTransport(u, cfg, topics=cfg.topics, store=store), cfg
    )
    ft.on_switch = switches.append
    task = asyncio.create_task(ft.run(sink))
    try:
        await _until(lambda: ft.url == backup.url and ft.state == "connected", "on the backup")
        seen, probed = len(ft.rechecks), len(ghost_probes)
        # several re-checks, each of which measures the ghost: it must not take the agent away
        await _until(lambda: len(ft.rechecks) >= seen + 4, "four re-checks")
        # not probed on every tick (4 per re-check here): by the re-check's measurement and
        # once when its hold-off after a failed probe ends, no more
        assert len(ghost_probes) - probed <= 2 * (len(ft.rechecks) - seen) + 1, ghost_probes
        assert ft.rechecks[seen:] == [False] * (len(ft.rechecks) - seen), ft.rechecks
        assert ft.url == backup.url and ft.state == "connected"
        assert switches == [backup.url], switches
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        backup.stop()
        await zc.async_unregister_service(info)
        await zc.async_close()
