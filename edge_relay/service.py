"""The running relay: store, hub, HTTP server, retention and mDNS, as one async context."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from collections.abc import AsyncIterator

from aiohttp import web

from agent.errors import ConfigError, EdgepushError
from agent.store import Store
from edge_relay.config import RelayConfig
from edge_relay.hub import Hub
from edge_relay.server import make_app
from edge_relay.state import RelayState

log = logging.getLogger(__name__)


def _ssl(cfg: RelayConfig) -> ssl.SSLContext | None:
    if cfg.tls_cert is None or cfg.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"--tls-cert/--tls-key: cannot load: {exc}") from None
    return ctx


@contextlib.asynccontextmanager
async def running(cfg: RelayConfig) -> AsyncIterator[RelayState]:
    """Start everything; yield the shared state; shut down in reverse order."""
    if cfg.upstream is not None:
        # Imported only with an upstream: the bridge brings paho and the agent's MQTT transport
        # and config, ~3 MB of the relay's RSS (bench/relay_memory.py).
        from edge_relay.bridge import Bridge, forward_rule
    store = Store(cfg.db).open()
    try:
        forward = forward_rule(cfg.forward) if cfg.upstream and cfg.forward else None
        async with Hub(store, forward=forward) as hub, asyncio.TaskGroup() as tg:
            state = RelayState(cfg, store, hub)
            hub.on_delivered = state.metrics.delivered.inc
            if cfg.upstream is not None:
                bridge = tg.create_task(Bridge(state).run(), name="bridge")
            # A long request line (10,000 comma-joined topics) must reach our handler, which
            # answers with a JSON error naming the limit, instead of aiohttp's plain-text 400.
            runner = web.AppRunner(
                make_app(state), handler_cancellation=True, access_log=None, shutdown_timeout=2.0,
                max_line_size=128 * 1024, max_field_size=16 * 1024,
            )  # fmt: skip
            await runner.setup()
            site = web.TCPSite(runner, cfg.host, cfg.port, ssl_context=_ssl(cfg))
            try:
                await site.start()
            except OSError as exc:
                await runner.cleanup()
                raise ConfigError(f"--listen {cfg.listen}: cannot listen: {exc.strerror}") from None
            prune = tg.create_task(_prune_loop(state))
            scheme = "https" if cfg.tls else "http"
            log.info("edge-relay listening on %s://%s:%d", scheme, cfg.host, cfg.port)
            try:
                if cfg.advertise:
                    from edge_relay.mdns import Advertiser  # zeroconf, ~3.4 MB: only for mDNS

                    async with Advertiser(cfg.host, cfg.port, tls=cfg.tls):
                        yield state
                else:
                    yield state
            finally:
                prune.cancel()
                if cfg.upstream is not None:
                    bridge.cancel()
                await runner.cleanup()
    finally:
        store.close()


async def _prune_loop(state: RelayState) -> None:
    lim = state.cfg.limits
    while True:
        try:
            last = await asyncio.to_thread(state.store.last_message)
            if last is not None:
                # The relay has no screen: a stored message counts as handed over once stored.
                await asyncio.to_thread(state.store.mark_notified, last.seq)
            n = await asyncio.to_thread(
                state.store.prune, max_age=lim.retention_age, max_messages=lim.retention_count
            )
            if n:
                log.info("retention: pruned %d messages", n)
        except EdgepushError as exc:
            log.warning("retention: %s", exc)
        await asyncio.sleep(state.cfg.prune_interval)


async def serve(cfg: RelayConfig) -> int:
    """Run until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running(cfg):
        print(f"edge-relay ready on port {cfg.port}", flush=True)
        await stop.wait()
    return 0
