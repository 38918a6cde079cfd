"""The running relay: store, hub, HTTP server, retention and mDNS, as one async context."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import ssl
from collections.abc import AsyncIterator

from aiohttp import web

from agent.errors import ConfigError, EdgepushError
from agent.store import Store
from edge_relay import deflate
from edge_relay.config import RelayConfig
from edge_relay.files import keeper
from edge_relay.guard import MAX_FIELD, MAX_LINE, Gate
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
            hub.on_rejected = state.note_rejected
            if cfg.upstream is not None:
                bridge = tg.create_task(Bridge(state).run(), name="bridge")
            runner = web.AppRunner(make_app(state), handler_cancellation=True,
                                   shutdown_timeout=2.0)  # fmt: skip
            await runner.setup()
            listener = await _listen(cfg, runner)
            prune = tg.create_task(_prune_loop(state))
            # Startup's objects (modules, aiohttp's tables) never become garbage: frozen out of
            # the collector's view, the full collection a burst of connections triggers scans
            # only what they made (measured at 300 connects: 62 ms of gen-2 pause, 5 ms frozen;
            # it was /v1/health's worst latency).
            gc.freeze()
            if cfg.auth_file is not None:  # revocations close open streams (edge_relay.revoke)
                watch = tg.create_task(state.watch_auth(), name="auth-watch")
            scheme = "https" if cfg.tls else "http"
            log.info("edge-relay listening on %s://%s:%d", scheme, cfg.host, cfg.port)
            if cfg.compress:
                log.info("WebSocket permessage-deflate with %s", deflate.backend_name())
            try:
                if cfg.advertise:
                    from edge_relay.mdns import Advertiser  # zeroconf, ~3.4 MB: only for mDNS

                    async with Advertiser(cfg.host, cfg.port, tls=cfg.tls):
                        yield state
                else:
                    yield state
            finally:
                prune.cancel()
                if cfg.auth_file is not None:
                    watch.cancel()
                if cfg.upstream is not None:
                    bridge.cancel()
                listener.close()
                await runner.cleanup()
                asyncio.get_running_loop().set_exception_handler(None)
    finally:
        store.close()


async def _listen(cfg: RelayConfig, runner: web.AppRunner) -> asyncio.Server:
    """The listening socket, its connections guarded (``edge_relay.guard``): our own
    ``create_server`` over aiohttp's ``runner.server`` instead of ``web.TCPSite``."""
    assert runner.server is not None
    lim = cfg.limits
    # lingering_time: how long aiohttp still reads (and drops) a body after an early answer
    # (413, 408) so the client sees the answer rather than a reset; bounded, not 10 s
    gate = Gate(lim, runner.server, keepalive_timeout=lim.idle_timeout, access_log=None,
                max_line_size=MAX_LINE, max_field_size=MAX_FIELD,
                lingering_time=min(2.0, lim.body_timeout))  # fmt: skip
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(gate.loop_exception)  # reset when the relay stops
    try:
        ctx = _ssl(cfg)
    except ConfigError:
        await runner.cleanup()
        raise
    try:
        return await loop.create_server(
            gate.factory, cfg.host, cfg.port, ssl=ctx, reuse_address=True, backlog=gate.backlog,
            ssl_handshake_timeout=lim.header_timeout if ctx is not None else None,
        )  # fmt: skip
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"--listen {cfg.listen}: cannot listen: {exc.strerror}") from None


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
            # files of pruned or never-committed messages, expired files, cut uploads
            await asyncio.to_thread(state.files.sweep, keeper(state.store))
        except EdgepushError as exc:
            log.warning("retention: %s", exc)
        except OSError as exc:
            log.warning("attachments: cannot sweep %s: %s", state.files.dir, exc)
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
