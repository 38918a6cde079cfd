"""mDNS advertisement of the relay as ``_edgepush._tcp.local.`` (the only zeroconf user)."""

from __future__ import annotations

import logging
import socket

from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from agent import __version__

SERVICE_TYPE = "_edgepush._tcp.local."
log = logging.getLogger(__name__)


def _addresses(host: str) -> list[str]:
    if host not in ("0.0.0.0", "::", ""):
        return [host]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))  # no packet is sent: it only picks a route
            return [s.getsockname()[0]]
    except OSError:
        return ["127.0.0.1"]


class Advertiser:
    """Registers the service on enter, unregisters on exit. Failures are logged, not fatal."""

    def __init__(self, host: str, port: int, *, tls: bool) -> None:
        self.host, self.port, self.tls = host, port, tls
        self._zc: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None

    async def __aenter__(self) -> Advertiser:
        name = f"edge-relay-{socket.gethostname()[:40]}-{self.port}.{SERVICE_TYPE}"
        addrs = _addresses(self.host)
        self._info = AsyncServiceInfo(
            SERVICE_TYPE, name, port=self.port, parsed_addresses=addrs,
            properties={"tls": "1" if self.tls else "0", "version": __version__, "path": "/"},
        )  # fmt: skip
        try:
            self._zc = AsyncZeroconf(ip_version=IPVersion.V4Only)
            await self._zc.async_register_service(self._info)
            log.info("advertising %s on %s port %d", SERVICE_TYPE, ",".join(addrs), self.port)
        except (OSError, RuntimeError, ValueError) as exc:  # zeroconf's own errors too
            log.warning("mDNS advertisement failed (the relay runs without it): %s", exc)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._zc is not None:
            if self._info is not None:
                try:
                    await self._zc.async_unregister_service(self._info)
                except (OSError, RuntimeError) as err:
                    log.debug("mDNS unregister: %s", err)
            await self._zc.async_close()
