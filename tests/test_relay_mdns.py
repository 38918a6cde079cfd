"""mDNS: a relay started without --no-advertise is found by browsing ``_edgepush._tcp.local.``."""

from __future__ import annotations

import time
from pathlib import Path

from zeroconf import ServiceBrowser, ServiceListener, Zeroconf

from tests.relay import Relay

SERVICE = "_edgepush._tcp.local."


class _Found(ServiceListener):
    def __init__(self) -> None:
        self.names: list[str] = []

    def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self.names.append(name)

    def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        pass

    def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        pass


def test_relay_advertises_itself(tmp_path: Path) -> None:
    relay = Relay(tmp_path, args=["--advertise"]).start()
    zc = Zeroconf()
    try:
        found = _Found()
        browser = ServiceBrowser(zc, SERVICE, found)
        deadline = time.monotonic() + 20
        info = None
        while time.monotonic() < deadline and info is None:
            for name in list(found.names):
                candidate = zc.get_service_info(SERVICE, name, timeout=2000)
                if candidate is not None and candidate.port == relay.port:
                    info = candidate
            time.sleep(0.1)
        browser.cancel()
        assert info is not None, f"no {SERVICE} with port {relay.port}; saw {found.names}"
        assert info.properties[b"tls"] == b"0"
    finally:
        zc.close()
        assert relay.stop() == 0
