"""The transport for a server URL, chosen by its scheme (``mqtt(s)://`` → MQTT, ``ws(s)://``
and ``http(s)://`` → the ntfy WebSocket transport), and failover for several servers."""

from __future__ import annotations

import importlib
import urllib.parse
from collections.abc import Callable

from agent.config import AgentConfig
from agent.errors import ConfigError
from agent.transports import Transport

TransportFactory = Callable[[str, AgentConfig, str], Transport]


def _mqtt(url: str, cfg: AgentConfig, client_id: str) -> Transport:
    from agent import secrets
    from agent.transports.mqtt import MqttTransport, parse_url

    user, password = secrets.credentials(cfg, url, parse_url(url).username)
    return MqttTransport(url, cfg, topics=cfg.topics, client_id=client_id, username=user,
                         password=password, state_prefix=cfg.state_topic_prefix,
                         sealed_arrivals=True)  # fmt: skip


def _ws(url: str, cfg: AgentConfig, client_id: str) -> Transport:
    # The WebSocket transport (ntfy-compatible servers) keeps the same contract; it is looked up
    # by name so this module does not depend on it being present.
    try:
        module = importlib.import_module("agent.transports.ws")
    except ModuleNotFoundError:
        raise ConfigError(f"server {url!r}: the WebSocket transport is not installed") from None
    factory: TransportFactory = module.make_transport
    return factory(url, cfg, client_id)


TRANSPORTS: dict[str, TransportFactory] = {
    "mqtt": _mqtt,
    "mqtts": _mqtt,
    "ws": _ws,
    "wss": _ws,
    "http": _ws,
    "https": _ws,
}


def make_transport(url: str, cfg: AgentConfig, client_id: str) -> Transport:
    """The transport for ``url``, chosen by its scheme."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    factory = TRANSPORTS.get(scheme)
    if factory is None:
        known = ", ".join(f"{s}://" for s in TRANSPORTS)
        raise ConfigError(f"server {url!r}: unknown URL scheme; use one of {known}")
    return factory(url, cfg, client_id)


def make_transports(cfg: AgentConfig, client_id: str) -> list[Transport]:
    """One transport for one server; several (or ``auto``) are a preference list: failover.

    ``--server`` given several times means "in this order of preference", so one server is
    used at a time (agent.transports.failover), never all of them at once.
    """
    servers = cfg.servers
    if len(servers) == 1 and servers[0].strip().lower() != "auto":
        return [make_transport(servers[0], cfg, client_id)]
    from agent.transports.failover import FailoverTransport

    return [FailoverTransport(servers, lambda u: make_transport(u, cfg, client_id), cfg)]
