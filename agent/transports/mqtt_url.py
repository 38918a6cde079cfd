"""MQTT broker URLs: ``mqtt://[user[:password]@]host[:port]`` or ``mqtts://...`` (pure).

Part of the MQTT transport; ``agent.transports.mqtt`` re-exports both names.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from agent.errors import ConfigError


@dataclass(frozen=True)
class MqttUrl:
    """``mqtt://[user[:password]@]host[:port]`` or ``mqtts://...``, parsed."""

    tls: bool
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @property
    def display(self) -> str:
        """The URL without credentials (for logs and the status file)."""
        scheme = "mqtts" if self.tls else "mqtt"
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{host}:{self.port}"


def parse_url(url: str) -> MqttUrl:
    """Parse a broker URL; ConfigError names what is wrong."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"server {url!r}: {exc}") from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"server {url!r}: an MQTT URL starts with mqtt:// or mqtts://")
    if not parts.hostname:
        raise ConfigError(f"server {url!r}: no host name")
    tls = parts.scheme == "mqtts"
    return MqttUrl(
        tls=tls,
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        username=urllib.parse.unquote(parts.username) if parts.username else None,
        password=urllib.parse.unquote(parts.password) if parts.password else None,
    )
