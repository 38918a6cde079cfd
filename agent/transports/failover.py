"""Several servers in preference order (``auto`` = relays on the LAN): one live at a time.

Theory of operation
-------------------
``FailoverTransport`` is itself a Transport. It runs ONE child transport (made by the
service's URL-scheme factory) for the server ``agent.servers.choose`` picks, watches it, and
replaces it when:

* it has not been connected for ``ws.failover_after`` seconds and another candidate answers a
  TCP connect (the failed server cools down for ``ws.recheck`` seconds, so the next pick moves
  on). Moving to servers that do not answer either would only trade a server that may be
  refusing a SUBSCRIBE for a while (a broker cluster electing) for dead ones; or
* it has not connected since it was picked, its last attempt failed and its server does not
  answer a TCP connect (refused, or no answer within 2 s) while another candidate is not
  cooling down: a dead first server in ``--server`` costs well under a second at start, not
  ``failover_after`` (issue 13: 10 of the 10.9-15.7 s a fresh agent took to connect to a NATS
  cluster with a node down). A server that was connected keeps ``failover_after``: a relay
  or broker restarting refuses connections for a moment and is worth waiting for; or
* a more preferred server is reachable again (checked every ``ws.recheck`` seconds and as
  soon as discovery reports a change), e.g. the relay came back: the agent returns to it; or
* among relays of the same rank, another is clearly faster (hysteresis in ``choose``).

Nothing is lost or repeated on a switch: each child commits its messages with its own cursor
(ntfy) or acks only after the commit (MQTT), so cancelling one mid-batch leaves at worst a
redelivery, and the store's UNIQUE id makes that a no-op. Returning to a source resumes from
that source's own cursor.

"Reachable" and "connect time" are measured with a plain TCP connect to the server's port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.parse
from collections.abc import Callable, Sequence

from agent.config import AgentConfig
from agent.discovery import Discovery
from agent.errors import AuthError, ConfigError, ConnectionLost
from agent.ntfy import parse_server, server_kind
from agent.servers import Candidate, better_than, choose, expand, has_auto
from agent.store import OutboxItem
from agent.tasks import reap
from agent.transports import BatchSink, ConnState, Transport

log = logging.getLogger("pushagent.failover")

_TICK = 0.25
_PROBE_TIMEOUT = 2.0
_FIRST_LOOK = 3.0
_PROBE_EVERY = 1.0
"""Seconds between TCP probes of a server that is down (its own, or the others')."""


def host_port(url: str) -> tuple[str, int]:
    """Where a server URL connects to (for the TCP probe)."""
    if server_kind(url) == "ntfy":
        s = parse_server(url)
        return s.host, s.port
    parts = urllib.parse.urlsplit(url)
    tls = parts.scheme in ("mqtts", "ssl", "wss+mqtt")
    return parts.hostname or "localhost", parts.port or (8883 if tls else 1883)


async def probe(url: str, timeout: float = _PROBE_TIMEOUT) -> float | None:
    """Seconds a TCP connect to ``url`` took, or None when it failed."""
    host, port = host_port(url)
    start = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return None
    elapsed = time.monotonic() - start
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return elapsed


class FailoverTransport:
    """Runs the best reachable server's transport; moves on failure, returns when it can."""

    def __init__(
        self,
        servers: Sequence[str],
        make: Callable[[str], Transport],
        cfg: AgentConfig,
        *,
        discovery: Discovery | None = None,
    ) -> None:
        if not servers:
            raise ConfigError("no server given: use --server URL (or 'auto')")
        self.servers = tuple(servers)
        self.cfg = cfg
        self._make = make
        self._discovery = discovery
        self._child: Transport | None = None
        self._cooldown: dict[str, float] = {}
        self._times: dict[str, float] = {}
        self._probe_failed: dict[str, float] = {}
        self.on_switch: Callable[[str], None] | None = None
        self.on_state: Callable[[ConnState], None] | None = None
        self.url = ",".join(self.servers)
        """The server in use (the list until one is picked)."""
        self.state: ConnState = "offline"

    async def run(self, sink: BatchSink) -> None:
        """Run the chosen child until cancelled; switch as the module docstring says.

        With ``auto`` in the list and no Discovery given, one is opened for the run's lifetime.
        """
        if self._discovery is not None or not has_auto(self.servers):
            await self._run(sink)
            return
        ws = self.cfg.ws
        async with Discovery(interval=2 * ws.recheck, name_filter=ws.relay_name) as found:
            self._discovery = found
            try:
                await self._run(sink)
            finally:
                self._discovery = None

    async def _run(self, sink: BatchSink) -> None:
        current: str | None = None
        if self._discovery is not None and not self._discovery.relays():
            # At start, give mDNS a moment: connecting to the cloud only to move to the relay
            # a second later would cost a second connection (and a replay) on every start.
            await self._wait_change(_FIRST_LOOK)
        try:
            while True:
                cands = await self._candidates()
                pick = choose(cands, current=current, cooldown=self._cooling(), now=_now())
                if pick is None:
                    log.warning("no server available (waiting for a relay to appear)")
                    await self._wait_change(self.cfg.ws.recheck)
                    continue
                current = pick.url
                await self._run_child(pick, sink)
        finally:
            self._child = None
            self._forward_state("offline")

    async def publish(self, item: OutboxItem) -> None:
        child = self._child
        if child is None:
            raise ConnectionLost("not connected to any server")
        await child.publish(item)

    # --- internals ------------------------------------------------------------------------

    def _cooling(self) -> dict[str, float]:
        """Servers not to pick now: failed connections and failed probes, until when."""
        out = dict(self._probe_failed)
        for url, until in self._cooldown.items():
            out[url] = max(until, out.get(url, 0.0))
        return out

    def _forward_state(self, state: ConnState) -> None:
        if state != self.state:
            self.state = state
            if self.on_state is not None:
                self.on_state(state)

    async def _run_child(self, pick: Candidate, sink: BatchSink) -> None:
        child = self._make(pick.url)
        self._child = child
        self.url = child.url
        log.info("using %s", child.url)
        if hasattr(child, "on_state"):
            child.on_state = self._forward_state
        if hasattr(child, "keep_retrying"):  # a refusal retries at the cap while we fail
            child.keep_retrying = True  # over (agent.transports.refusal), never ends the agent
        if self.on_switch is not None:
            self.on_switch(child.url)
        self._forward_state("connecting")
        task = asyncio.create_task(child.run(sink))
        try:
            verdict = await self._watch(pick, child, task)
        finally:
            await reap(task)
        if verdict == "failed":
            self._cooldown[pick.url] = _now() + self.cfg.ws.recheck
            if self._discovery is not None:
                self._discovery.nudge()

    async def _watch(self, pick: Candidate, child: Transport, task: asyncio.Task[None]) -> str:
        """Return "failed" or "better" when the child should be replaced."""
        ws = self.cfg.ws
        down_since: float | None = _now()
        ever_up = False
        next_check = _now() + ws.recheck
        next_probe = _now()
        while True:
            await self._wait_change(_TICK, task)
            self._forward_state(child.state)  # for children that do not report changes
            if task.done():
                exc = task.exception()
                if isinstance(exc, AuthError | ConfigError):
                    raise exc
                log.warning("%s stopped: %s", child.url, exc)
                return "failed"
            if child.state == "connected":
                self._cooldown.pop(pick.url, None)
                self._probe_failed.pop(pick.url, None)
                down_since, ever_up = None, True
            elif down_since is None:
                down_since = _now()
                if self._discovery is not None:
                    self._discovery.nudge()
            others = [c for c in await self._candidates() if c.url != pick.url]
            if down_since is not None and others and _now() >= next_probe:
                next_probe = _now() + _PROBE_EVERY
                if await self._give_up(pick, child, others, down_since, ever_up=ever_up):
                    return "failed"
            changed = self._discovery is not None and self._discovery.changed.is_set()
            if changed or _now() >= next_check:
                if self._discovery is not None:
                    self._discovery.changed.clear()
                next_check = _now() + ws.recheck
                if await self._better_exists(pick):
                    return "better"

    async def _give_up(
        self,
        pick: Candidate,
        child: Transport,
        others: Sequence[Candidate],
        down_since: float,
        *,
        ever_up: bool,
    ) -> bool:
        """True when the child, down since ``down_since``, should make way for ``others``
        (the rules in the module docstring)."""
        cooling = self._cooling()
        waiting = [c for c in others if cooling.get(c.url, 0.0) <= _now()]
        tried = getattr(child, "last_error", None) is not None  # an attempt has failed
        if not ever_up and waiting and tried and await probe(pick.url) is None:
            log.warning("%s does not answer; trying the next server", child.url)
            return True
        after = self.cfg.ws.failover_after
        if _now() - down_since <= after:
            return False
        answers = await asyncio.gather(*(probe(c.url) for c in others))
        if all(t is None for t in answers):
            return False  # no better place to go: the child keeps retrying with its backoff
        log.warning("%s unreachable for %.0f s; failing over", child.url, after)
        return True

    async def _better_exists(self, pick: Candidate) -> bool:
        cands = await self._candidates(measure=True)
        for c in better_than(cands, pick.url):
            if c.url in self._times and self._cooling().get(c.url, 0.0) <= _now():
                log.info("%s is reachable again; moving back to it", c.url)
                return True
        best = choose(cands, current=pick.url, now=_now())
        if best is not None and best.url != pick.url and best.rank == pick.rank:
            log.info("%s answers clearly faster than %s; moving", best.url, pick.url)
            return True
        return False

    async def _candidates(self, *, measure: bool = False) -> list[Candidate]:
        relays = self._discovery.relays() if self._discovery is not None else []
        cands = expand(self.servers, relays, self._times)
        unmeasured = [
            c for c in cands
            if c.discovered and c.url not in self._times
            and self._probe_failed.get(c.url, 0.0) <= _now()
        ]  # fmt: skip
        if measure or unmeasured:
            await self._measure(cands if measure else unmeasured)
            cands = expand(self.servers, relays, self._times)
        return cands

    async def _measure(self, cands: Sequence[Candidate]) -> None:
        results = await asyncio.gather(*(probe(c.url) for c in cands))
        for c, t in zip(cands, results, strict=True):
            if t is None:
                # Not probed again (nor picked) for a while: an advertised relay that cannot be
                # reached must not be retried on every tick.
                self._times.pop(c.url, None)
                self._probe_failed[c.url] = _now() + self.cfg.ws.recheck
            else:
                self._times[c.url] = t
                self._probe_failed.pop(c.url, None)

    async def _wait_change(self, timeout: float, task: asyncio.Task[None] | None = None) -> None:
        waits: list[asyncio.Future[object]] = []
        if self._discovery is not None:
            waits.append(asyncio.ensure_future(self._discovery.changed.wait()))
        if task is not None:
            waits.append(asyncio.ensure_future(asyncio.shield(task)))
        if not waits:
            await asyncio.sleep(timeout)
            return
        try:
            await asyncio.wait(waits, timeout=timeout)
        finally:
            await reap(*waits)


def _now() -> float:
    return time.monotonic()
