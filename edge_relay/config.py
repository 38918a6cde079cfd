"""The relay's configuration: TOML file → environment → flags, built once into frozen dataclasses.

The only module of the relay that reads ``os.environ`` (``EDGE_RELAY_CONFIG`` names the config
file; ``EDGE_RELAY_<KEY>`` sets a top-level key, e.g. ``EDGE_RELAY_LISTEN=127.0.0.1:9000``).
Limits default to ntfy's defaults where ntfy has one. Sizes and durations are read as ntfy's
server.yml writes them (``"15M"``, ``"1G"``, ``"3h"``, ``"45s"``; ``agent.settings``'
``ByteSize``, ``Seconds``, ``WholeSeconds``) or as whole numbers of bytes and seconds.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import ConfigError
from agent.ntfyproto.attachment import INLINE_MAX
from agent.settings import ByteSize, Seconds, WholeSeconds, build, merge
from edge_relay.core import ExemptHosts

DEFAULT_PORT = 8080
_BASE_URL = re.compile(r"https?://[^/\s?#]+(?:/[^\s?#]*)?")
_ENV_KEYS = ("listen", "data_dir", "upstream", "auth_file")


@dataclass(frozen=True)
class Limits:
    """Per-message and per-client limits (ntfy's defaults where it has one)."""

    message_size: ByteSize = 4096  # type: ignore[assignment]
    publish_burst: int = 60
    """Publishes a client may make at once (ntfy's ``visitor-request-limit-burst``)."""
    publish_rate: float = 2.0
    """Tokens per second refilling each client's bucket. ntfy's default is one per 5 s
    (0.2), sized for a public server; a LAN hub's clients are sensors and home-automation
    boxes that publish once a second for hours, so the relay sustains 2/s per client (a
    1/s publisher with room for bursts) and keeps ntfy's burst of 60."""
    exempt_hosts: tuple[str, ...] = ("127.0.0.0/8", "::1")
    """Clients never rate limited: addresses, CIDRs and host names (resolved at start), as
    ntfy's ``visitor-request-limit-exempt-hosts``; default loopback (the relay's own host)."""
    max_subscriptions: int = 30
    max_topics_per_subscription: int = 100
    send_queue: int = 1000
    retention_age: WholeSeconds = 12 * 3600  # type: ignore[assignment]
    retention_count: int = 100_000
    header_timeout: Seconds = 10.0  # type: ignore[assignment]
    """Seconds to receive a request's headers, counted from its first byte (and, on a new
    connection, from the accept: a silent connection is closed after this)."""
    body_timeout: Seconds = 30.0  # type: ignore[assignment]
    """Seconds to receive a request's body once its headers are in (408 after that)."""
    idle_timeout: Seconds = 60.0  # type: ignore[assignment]
    """Seconds a keep-alive connection may wait for its next request; subscriber streams
    are exempt (they have keepalive events)."""
    max_connections: int = 4096
    """Open HTTP connections at most; beyond it (or what the file-descriptor limit allows)
    new ones are refused at once."""
    max_delay: WholeSeconds = 3 * 86400  # type: ignore[assignment]
    """Seconds ahead a message may be scheduled (ntfy's ``message-delay-limit``, default 3
    days; further is 40006). The minimum is ntfy's fixed 10 s."""

    def __post_init__(self) -> None:
        for name in ("message_size", "publish_burst", "max_subscriptions", "send_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"'limits.{name}' must be at least 1")
        if self.max_topics_per_subscription < 1:
            raise ValueError("'limits.max_topics_per_subscription' must be at least 1")
        if self.publish_rate <= 0:
            raise ValueError(f"'limits.publish_rate' must be > 0, not {self.publish_rate}")
        for name in ("header_timeout", "body_timeout", "idle_timeout"):
            if not 0.05 <= getattr(self, name) <= 86400:
                raise ValueError(f"'limits.{name}' must be 0.05-86400 seconds")
        ExemptHosts.parse(self.exempt_hosts)  # ValueError naming a bad entry
        if self.max_connections < 1:
            raise ValueError("'limits.max_connections' must be at least 1")
        if not 10 <= self.max_delay <= 366 * 86400:
            raise ValueError(f"'limits.max_delay' must be 10 s to 366 days, not {self.max_delay}")
        if self.retention_age < 60 or self.retention_count < 1:
            raise ValueError("'limits.retention_age' must be >= 60 s and retention_count >= 1")


_MB = 1024 * 1024


@dataclass(frozen=True)
class Attachments:
    """``[attachments]``: files published as ntfy's attachments (ntfy's names and defaults,
    except ``total_size_limit``: 1 GB, not 5 GB, on a gateway's SD card). Sizes in bytes or
    as ntfy writes them (``"15M"``), ``expiry`` in seconds or as a duration (``"3h"``)."""

    cache_dir: Path | None = None
    """Where files are kept (default ``<data_dir>/attachments``), each named by its message
    id alone."""
    file_size_limit: ByteSize = 15 * _MB  # type: ignore[assignment]
    total_size_limit: ByteSize = 1024 * _MB  # type: ignore[assignment]
    expiry: WholeSeconds = 3 * 3600  # type: ignore[assignment]
    """Seconds a file is kept after its upload (never past its message's expiry)."""
    daily_bandwidth_limit: ByteSize = 500 * _MB  # type: ignore[assignment]
    """Bytes one client (token, else address) may upload per day (ntfy's
    ``visitor-attachment-daily-bandwidth-limit``): a bucket that refills over 24 h."""
    keep_free: ByteSize = 64 * _MB  # type: ignore[assignment]
    """Bytes of the cache's file system that uploads leave free, plus ``keep_free_percent``
    of its size: by default the store (``relay.db``) is on the same disk, and text messages
    must still commit when the cache is as full as it may get (an upload that would eat into
    the reserve is 507). 64 MiB holds the store at its ``retention_count`` of typical
    messages (~355 B each, measured: ~35 MB) and its write-ahead log (~4 MiB between
    checkpoints); the share of the disk keeps a file system off its last blocks
    (docs/RELAY.md, "A full disk"). 0 and 0 for a cache on a disk of its own."""
    keep_free_percent: float = 2.0
    """Percent of the cache's file system's size kept free on top of ``keep_free`` (0-50)."""
    upstream_inline_limit: ByteSize = 256 * 1024  # type: ignore[assignment]
    """Files below this many bytes go upstream inline (the bridge's forward: a base64
    ``data:`` URL as ``attachment.url``); larger ones by URL. 0: never inline; at most
    256 KiB (``INLINE_MAX``, what an agent accepts beside ``max_message_size``)."""

    def __post_init__(self) -> None:
        for name in ("file_size_limit", "total_size_limit", "daily_bandwidth_limit"):
            if getattr(self, name) < 0:
                raise ValueError(f"'attachments.{name}' must be >= 0 bytes (0: no files)")
        if not 0 <= self.keep_free_percent <= 50:
            raise ValueError(f"'attachments.keep_free_percent' must be 0-50, not "
                             f"{self.keep_free_percent:g}")  # fmt: skip
        if not 0 <= self.upstream_inline_limit <= INLINE_MAX:
            raise ValueError(f"'attachments.upstream_inline_limit' must be 0-{INLINE_MAX} bytes, "
                             f"not {self.upstream_inline_limit}")  # fmt: skip
        if not 1 <= self.expiry <= 366 * 86400:
            raise ValueError(f"'attachments.expiry' must be 1 s to 366 days, not {self.expiry}")


@dataclass(frozen=True)
class Web:
    """``[web]``: the browser app at ``/`` (docs/WEB.md)."""

    enabled: bool = True
    """Serve the app at ``/``, ``/app/...`` and ``/<topic>`` for browsers; off (``--no-web``):
    those answer as without an app (404, the API)."""


@dataclass(frozen=True)
class RelayConfig:
    """Everything ``edge-relay serve`` needs."""

    listen: str = f"0.0.0.0:{DEFAULT_PORT}"
    data_dir: Path = Path("edge-relay-data")
    upstream: str | None = None
    upstream_topics: tuple[str, ...] = ()
    upstream_protocol: str = "auto"
    """``[upstream] protocol``: "auto" (MQTT 5, else 3.1.1, remembered), "5" or "3.1.1"."""
    upstream_redelivery: str = "auto"
    """``[upstream] redelivery``: whether the broker's packet ids and DUP flag may dedupe
    id-less messages, as the agent's ``[mqtt] redelivery`` ("auto", "trusted", "untrusted";
    ``agent.transports.mqtt_redelivery``)."""
    forward: tuple[str, ...] = ()
    auth_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    advertise: bool = True
    keepalive: Seconds = 45.0  # type: ignore[assignment]
    prune_interval: Seconds = 60.0  # type: ignore[assignment]
    compress: bool = True
    """WebSocket permessage-deflate (when the client offers it) and gzip for ``/json``,
    ``/sse``, ``/raw`` and ``poll=1`` answers and compressible ``/file/`` attachments (when
    the request accepts it)."""
    limits: Limits = field(default_factory=Limits)
    attachments: Attachments = field(default_factory=Attachments)
    web: Web = field(default_factory=Web)
    base_url: str | None = None
    """The relay's public URL (ntfy's ``base-url``), for attachment URLs; without it they are
    made from the request's ``Host``."""

    def __post_init__(self) -> None:
        host_port(self.listen)
        if self.base_url is not None and not _BASE_URL.fullmatch(self.base_url):
            raise ValueError(f"'base_url' must be http(s)://host[:port][/path], not "
                             f"{self.base_url!r}")  # fmt: skip
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("'tls_cert' and 'tls_key' must be given together")
        if not 0.05 <= self.keepalive <= 3600:
            raise ValueError(f"'keepalive' must be 0.05-3600 seconds, not {self.keepalive}")
        if self.prune_interval <= 0:
            raise ValueError("'prune_interval' must be > 0")
        if self.upstream_protocol not in ("auto", "5", "3.1.1"):
            raise ValueError(
                f'\'upstream.protocol\' must be "auto", "5" or "3.1.1", '
                f"not {self.upstream_protocol!r}"
            )
        if self.upstream_redelivery not in ("auto", "trusted", "untrusted"):
            raise ValueError(
                '\'upstream.redelivery\' must be "auto", "trusted" or "untrusted", '
                f"not {self.upstream_redelivery!r}"
            )

    @property
    def host(self) -> str:
        return host_port(self.listen)[0]

    @property
    def port(self) -> int:
        return host_port(self.listen)[1]

    @property
    def db(self) -> Path:
        return self.data_dir / "relay.db"

    @property
    def attachment_dir(self) -> Path:
        return self.attachments.cache_dir or self.data_dir / "attachments"

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def host_port(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``:PORT``, or ``[v6]:PORT``) → (host, port); ValueError naming it."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"'listen' must be HOST:PORT, not {listen!r}")
    return (host.strip("[]") or "0.0.0.0"), int(port)


def load(
    flags: Mapping[str, Any],
    *,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> RelayConfig:
    """Build the configuration: the TOML file, then ``EDGE_RELAY_*``, then ``flags``."""
    env = os.environ if env is None else env
    if config_file is None and env.get("EDGE_RELAY_CONFIG"):
        config_file = Path(env["EDGE_RELAY_CONFIG"])
    table: dict[str, Any] = {}
    where = "command line"
    if config_file is not None:
        table = _upstream_table(_read_toml(config_file), str(config_file))
        where = str(config_file)
        build(RelayConfig, table, where=where)  # errors name the file, not the merge
    env_table = {
        key: env[f"EDGE_RELAY_{key.upper()}"]
        for key in _ENV_KEYS
        if env.get(f"EDGE_RELAY_{key.upper()}")
    }
    if env_table:
        build(RelayConfig, merge(table, env_table), where="environment")
        table = merge(table, env_table)
    table = merge(table, {k: v for k, v in flags.items() if v is not None})
    return build(RelayConfig, table, where=where if not flags else f"{where} + command line")


# ``[upstream]`` as a table (url, topics, protocol, redelivery) is the same as the flat keys.
_UPSTREAM_KEYS = {
    "url": "upstream",
    "topics": "upstream_topics",
    "protocol": "upstream_protocol",
    "redelivery": "upstream_redelivery",
}


def _upstream_table(table: dict[str, Any], where: str) -> dict[str, Any]:
    """``[upstream] url/topics/protocol/redelivery`` → the flat ``upstream*`` keys."""
    section = table.get("upstream")
    if not isinstance(section, Mapping):
        return table
    flat = {k: v for k, v in table.items() if k != "upstream"}
    unknown = [f"{where}: unknown key 'upstream.{k}'" for k in section if k not in _UPSTREAM_KEYS]
    if unknown:
        raise ConfigError("\n".join(unknown))
    for key, value in section.items():
        flat[_UPSTREAM_KEYS[key]] = value
    return flat


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a process the relay starts (the demo's agent), plus ``extra``."""
    return {**os.environ, **extra}
