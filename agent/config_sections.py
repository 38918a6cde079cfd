"""The sections of the agent's configuration (``[mqtt]``, ``[ws]``, ``[tls]``, ``[auth]``,
``[receipts]``, ``[store]``, ``[command]``, ``[desktop]``, ``[attachments]``, ``[[rules]]``),
one frozen dataclass each, checked in ``__post_init__``. ``agent.config`` builds them into an
``AgentConfig`` and re-exports every name, so ``from agent.config import MqttConfig`` works."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from agent.settings import ByteSize


@dataclass(frozen=True)
class MqttConfig:
    protocol: str = "auto"
    """"auto" (MQTT 5, else 3.1.1, remembered per server), "5" or "3.1.1"."""
    keepalive: int = 60
    session_expiry: int = 7 * 86400
    qos: int = 1
    max_batch: int = 1000
    connect_timeout: float = 10.0
    redelivery: str = "auto"
    """May packet id + DUP dedupe id-less messages: "auto", "trusted" or "untrusted"
    (``agent.transports.mqtt_redelivery``)."""
    compress: str = "none"
    """"zstd": publish payloads of 512 bytes and more as zstd frames (agent.transports.
    mqtt_codec); received zstd payloads are inflated whatever this says."""

    def __post_init__(self) -> None:
        if self.redelivery not in ("auto", "trusted", "untrusted"):
            raise ValueError(
                '\'mqtt.redelivery\' must be "auto", "trusted" or "untrusted", '
                f"not {self.redelivery!r}"
            )
        if self.compress not in ("none", "zstd"):
            raise ValueError(f'\'mqtt.compress\' must be "none" or "zstd", not {self.compress!r}')
        if self.protocol not in ("auto", "5", "3.1.1"):
            raise ValueError(
                f'\'mqtt.protocol\' must be "auto", "5" or "3.1.1", not {self.protocol!r}'
            )
        if not 5 <= self.keepalive <= 65535:
            raise ValueError(f"'mqtt.keepalive' must be 5-65535 seconds, not {self.keepalive}")
        if self.qos not in (0, 1):
            raise ValueError(f"'mqtt.qos' must be 0 or 1, not {self.qos}")
        if not 1 <= self.max_batch <= 100_000:
            raise ValueError(f"'mqtt.max_batch' must be 1-100000, not {self.max_batch}")
        if self.session_expiry < 0:
            raise ValueError(f"'mqtt.session_expiry' must be >= 0, not {self.session_expiry}")


@dataclass(frozen=True)
class TlsConfig:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False


@dataclass(frozen=True)
class AuthConfig:
    """Credentials that are not secrets, plus secrets taken from the environment or a file.

    The keyring is asked by ``agent.secrets`` at connect time; ``password`` and ``token`` here
    are only the environment's ``PUSHAGENT_PASSWORD`` / ``PUSHAGENT_TOKEN``.
    """

    username: str | None = None
    password_file: Path | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ReceiptsConfig:
    enabled: bool = True
    topic_prefix: str = "edgepush/receipts"

    def __post_init__(self) -> None:
        if not self.topic_prefix or any(c in self.topic_prefix for c in "+#\0"):
            raise ValueError(
                f"'receipts.topic_prefix' must be a topic without wildcards, "
                f"not {self.topic_prefix!r}"
            )


@dataclass(frozen=True)
class StoreConfig:
    """Retention. The defaults (a year, 100,000 messages) are ones a desktop never notices."""

    max_age_days: float = 365.0
    max_messages: int = 100_000

    def __post_init__(self) -> None:
        if self.max_age_days <= 0:
            raise ValueError(f"'store.max_age_days' must be > 0, not {self.max_age_days}")
        if self.max_messages < 1:
            raise ValueError(f"'store.max_messages' must be >= 1, not {self.max_messages}")


@dataclass(frozen=True)
class CommandConfig:
    """The ``command`` notifier: argv run per message (no shell unless ``shell = true``)."""

    argv: tuple[str, ...] = ()
    shell: bool = False
    timeout: float = 30.0
    workers: int = 4

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError(f"'command.timeout' must be > 0, not {self.timeout}")
        if not 1 <= self.workers <= 64:
            raise ValueError(f"'command.workers' must be 1-64, not {self.workers}")


@dataclass(frozen=True)
class DesktopConfig:
    """The ``desktop`` notifier: how links open and how much text a notification shows.

    ``opener`` is an argv the URL is appended to (default: the system's browser via
    ``webbrowser``); ``max_title`` / ``max_body`` cut what is shown (the store keeps it whole).
    """

    opener: tuple[str, ...] = ()
    max_title: int = 200
    max_body: int = 2000
    sound: bool = True
    downloads: Path | None = None
    """Where "Save" puts an attachment (default ``XDG_DOWNLOAD_DIR``, else ``~/Downloads``)."""

    def __post_init__(self) -> None:
        if not 10 <= self.max_title <= 10_000:
            raise ValueError(f"'desktop.max_title' must be 10-10000, not {self.max_title}")
        if not 10 <= self.max_body <= 100_000:
            raise ValueError(f"'desktop.max_body' must be 10-100000, not {self.max_body}")


DOWNLOAD_MODES = ("always", "images", "never")
_HTTP_URL = re.compile(r"https?://[^/\s?#]+(?:/[^\s?#]*)?", re.IGNORECASE)


@dataclass(frozen=True)
class AttachmentsConfig:
    """``[attachments]``: which attachments the agent downloads into its cache folder.

    ``download``: ``always``, ``images`` (files whose type is ``image/*``) or ``never``;
    ``max_download``: the largest file fetched; ``cache_max``: what the folder may hold (the
    oldest files are removed first); ``timeout``: seconds a download may go without a byte."""

    download: str = "images"
    max_download: ByteSize = 15 * 1024 * 1024  # type: ignore[assignment]
    cache_max: ByteSize = 500 * 1024 * 1024  # type: ignore[assignment]
    timeout: float = 30.0
    upload_server: str | None = None
    """Where ``pushagent send --attach FILE`` over MQTT puts the file (a relay or ntfy
    server, http(s)://): the MQTT message carries only its ``attachment`` object."""
    upload_topic: str = "pushagent-files"
    """The topic on ``upload_server`` the files are published to (receivers fetch them
    without a token: it must be readable by them)."""

    def __post_init__(self) -> None:
        if self.download not in DOWNLOAD_MODES:
            raise ValueError(
                f"'attachments.download' must be always, images or never, not {self.download!r}"
            )
        if not 0 < self.timeout <= 3600:
            raise ValueError(f"'attachments.timeout' must be 0-3600 seconds, not {self.timeout}")
        if self.upload_server is not None and not _HTTP_URL.fullmatch(self.upload_server):
            raise ValueError(f"'attachments.upload_server' must be an http(s)://HOST[:PORT] URL, "
                             f"not {self.upload_server!r}")  # fmt: skip
        if self.max_download < 1:
            raise ValueError(f"'attachments.max_download' must be > 0, not {self.max_download}")
        if self.cache_max < self.max_download:
            raise ValueError(
                f"'attachments.cache_max' ({self.cache_max}) must be at least "
                f"'attachments.max_download' ({self.max_download})"
            )


@dataclass(frozen=True)
class Rule:
    """``[[rules]]``: for topics matching ``topic`` (``*`` wildcards), a floor or a mute;
    ``ack_urgent``: priority-5 messages there must be acknowledged (agent.ackcore)."""

    topic: str = "*"
    min_priority: int = 1
    mute: bool = False
    ack_urgent: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.min_priority <= 5:
            raise ValueError(f"'rules.min_priority' must be 1-5, not {self.min_priority}")


@dataclass(frozen=True)
class Burst:
    """More than ``count`` messages from one topic within ``seconds``: one summary instead."""

    count: int = 5
    seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.count < 1 or self.seconds <= 0:
            raise ValueError(
                f"'burst' needs count >= 1 and seconds > 0, not {self.count}, {self.seconds}"
            )


@dataclass(frozen=True)
class WsConfig:
    """ntfy-style WebSocket servers: a keepalive missing for ``keepalive * 1.5`` is a dead link."""

    keepalive: float = 45.0
    connect_timeout: float = 10.0
    max_frame: int = 1024 * 1024
    max_batch: int = 1000
    failover_after: float = 10.0
    """Seconds a preferred server may stay unreachable before the next one is used."""
    recheck: float = 30.0
    """Seconds between checks whether a more preferred server (or relay) is back."""
    relay_name: str = "*"
    """``auto`` uses only relays whose mDNS instance name matches one of these
    comma-separated globs."""
    compress: bool = True
    """Offer WebSocket permessage-deflate (RFC 7692); the server decides whether to use it."""

    def __post_init__(self) -> None:
        if self.keepalive <= 0 or self.connect_timeout <= 0:
            raise ValueError("'ws.keepalive' and 'ws.connect_timeout' must be > 0")
        if not 1024 <= self.max_frame <= 64 * 1024 * 1024:
            raise ValueError(f"'ws.max_frame' must be 1 KiB to 64 MiB, not {self.max_frame}")
        if not 1 <= self.max_batch <= 100_000:
            raise ValueError(f"'ws.max_batch' must be 1-100000, not {self.max_batch}")
        if self.failover_after <= 0 or self.recheck <= 0:
            raise ValueError("'ws.failover_after' and 'ws.recheck' must be > 0")
