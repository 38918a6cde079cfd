"""Relays on the LAN, found by mDNS (``_edgepush._tcp.local.``): the only zeroconf importer.

Theory of operation
-------------------
A zeroconf service browser listens for relays coming and going; each one found is resolved
(address, port, TXT ``tls``/``path``) into a server URL. ``relays()`` is the current set, and
``changed`` is an asyncio.Event set whenever it changes, so the failover logic wakes up when a
relay appears instead of polling.

mDNS announcements can be missed (a relay SIGKILLed sends no goodbye; a packet is lost), so
the set is re-checked: ``recheck()`` asks each known relay to answer again (dropping the
silent ones) and restarts the browser (whose first queries go out at once, finding relays
that appeared unannounced). It runs every ``interval`` seconds and whenever the transport
reports a disconnect (``nudge()``, at most once per ``min_gap`` seconds): cheap, event-driven,
not a busy poll.

If mDNS cannot start (no multicast-capable interface), the agent logs why and carries on with
the servers it was given; ``auto`` then simply finds nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import ipaddress
import logging
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from agent.tasks import reap

log = logging.getLogger("pushagent.discovery")

SERVICE = "_edgepush._tcp.local."
_RESOLVE_MS = 1500
_TRUE = (b"1", b"true", b"yes", b"on")


def relay_url(
    addresses: list[str], port: int, properties: Mapping[bytes, bytes | None]
) -> str | None:
    """The URL for a resolved relay (pure): ``http(s)://address:port[/path]``.

    Loopback is preferred when advertised (a relay on this very machine), then the first
    IPv4, then the first IPv6 address. None when there is no usable address.
    """
    if not addresses or not 0 < port < 65536:
        return None
    ips = []
    for a in addresses:
        with contextlib.suppress(ValueError):
            ips.append(ipaddress.ip_address(a))
    if not ips:
        return None
    ip = min(ips, key=lambda i: (not i.is_loopback, i.version != 4))
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    tls = (properties.get(b"tls") or b"").lower() in _TRUE
    path = (properties.get(b"path") or b"").decode("utf-8", "replace").strip("/")
    scheme = "https" if tls else "http"
    return f"{scheme}://{host}:{port}" + (f"/{path}" if path else "")


class Discovery:
    """Browse for relays while open. Use as an async context manager."""

    def __init__(
        self,
        *,
        interval: float = 60.0,
        min_gap: float = 2.0,
        service: str = SERVICE,
        name_filter: str = "*",
    ) -> None:
        self.interval = interval
        self.name_filter = name_filter
        self.min_gap = min_gap
        self.service = service
        self.changed = asyncio.Event()
        self._found: dict[str, str] = {}  # service name → URL
        self._azc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last_recheck = 0.0

    def relays(self) -> list[str]:
        """URLs of the relays currently seen, sorted."""
        return sorted(set(self._found.values()))

    async def __aenter__(self) -> Self:
        try:
            self._azc = AsyncZeroconf(ip_version=IPVersion.V4Only)
            self._start_browser()
        except (OSError, RuntimeError) as exc:
            log.warning("mDNS discovery unavailable (%s); 'auto' will find no relay", exc)
            await self._close_zc()
            return self
        self._spawn(self._periodic())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await reap(*self._tasks)
        finally:
            await self._close_zc()

    def nudge(self) -> None:
        """A connection dropped: re-check soon (rate-limited)."""
        if self._azc is not None and time.monotonic() - self._last_recheck >= self.min_gap:
            self._last_recheck = time.monotonic()
            self._spawn(self.recheck())

    async def recheck(self) -> None:
        """Drop relays that no longer answer and look for new ones."""
        azc = self._azc
        if azc is None:
            return
        self._last_recheck = time.monotonic()
        for name in list(self._found):
            info = AsyncServiceInfo(self.service, name)
            if not await info.async_request(azc.zeroconf, _RESOLVE_MS):
                self._drop(name)
        if self._browser is not None:
            await self._browser.async_cancel()
        self._start_browser()

    # --- internals ------------------------------------------------------------------------

    def _start_browser(self) -> None:
        assert self._azc is not None
        self._browser = AsyncServiceBrowser(
            self._azc.zeroconf, [self.service], handlers=[self._on_change]
        )

    def _on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        # Called on the event loop by zeroconf's asyncio browser: only schedule work here.
        if state_change is ServiceStateChange.Removed:
            self._drop(name)
        else:
            self._spawn(self._resolve(name))

    async def _resolve(self, name: str) -> None:
        azc = self._azc
        short = name.removesuffix("." + self.service)
        if azc is None or not self._wanted(short):
            return
        info = AsyncServiceInfo(self.service, name)
        if not await info.async_request(azc.zeroconf, _RESOLVE_MS):
            log.debug("relay %s did not resolve", name)
            return
        url = relay_url(info.parsed_addresses(), info.port or 0, info.properties or {})
        if url is None:
            log.warning("relay %s advertises no usable address", name)
            return
        if self._found.get(name) != url:
            log.info("found relay %s at %s", short, url)
            self._found[name] = url
            self.changed.set()

    def _wanted(self, short: str) -> bool:
        patterns = [p.strip() for p in self.name_filter.split(",") if p.strip()]
        return any(fnmatch.fnmatchcase(short, p) for p in patterns)

    def _drop(self, name: str) -> None:
        url = self._found.pop(name, None)
        if url is not None:
            log.info("relay %s at %s is gone", name.removesuffix("." + self.service), url)
            self.changed.set()

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.recheck()
            except (OSError, RuntimeError) as exc:
                log.warning("mDNS re-check failed: %s", exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close_zc(self) -> None:
        if self._browser is not None:
            with contextlib.suppress(Exception):
                await self._browser.async_cancel()
            self._browser = None
        if self._azc is not None:
            await self._azc.async_close()
            self._azc = None
