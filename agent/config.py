"""The agent's configuration: built once (file → environment → flags) into frozen dataclasses.

This is the only module of the agent that reads ``os.environ``. Everything else receives an
``AgentConfig``. Errors name the file (or "environment" / "command line"), the key and the
value, and carry exit code 2.

Environment variables: ``PUSHAGENT_HOME`` (puts config, data and cache under one folder),
``PUSHAGENT_CONFIG`` (the config file), ``PUSHAGENT_SERVER`` and ``PUSHAGENT_TOPICS``
(comma-separated), ``PUSHAGENT_NOTIFIER``, ``PUSHAGENT_LOG_LEVEL``, and the secrets
``PUSHAGENT_PASSWORD`` / ``PUSHAGENT_TOKEN`` for headless devices without a keyring.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.envelope import DEFAULT_MAX_SIZE
from agent.errors import ConfigError
from agent.settings import ByteSize, build, merge, set_dotted

APP = "pushagent"
NOTIFIERS = ("desktop", "command", "log", "none")
MASK = "********"
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$")


@dataclass(frozen=True)
class Paths:
    """Where the agent keeps things. ``PUSHAGENT_HOME`` puts all of them under one folder."""

    config_file: Path
    data_dir: Path
    cache_dir: Path

    @property
    def db(self) -> Path:
        return self.data_dir / "pushagent.db"

    @property
    def status_file(self) -> Path:
        return self.data_dir / "status.json"


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


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent needs, checked. Built only by ``load``."""

    paths: Paths
    servers: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    notifier: str = "desktop"
    client_id: str | None = None
    device_name: str = field(default_factory=lambda: socket.gethostname()[:128] or "pushagent")
    """This device's human name, sent with its receipts and states beside the client id."""
    state_topic_prefix: str = "edgepush/state"
    """MQTT: synced states go to (and come from) ``<state_topic_prefix>/<topic>``."""
    max_message_size: int = DEFAULT_MAX_SIZE
    log_level: str = "info"
    quiet_hours: str | None = None
    quiet_hours_strict: bool = False
    burst: Burst | None = None
    rules: tuple[Rule, ...] = ()
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    receipts: ReceiptsConfig = field(default_factory=ReceiptsConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    command: CommandConfig = field(default_factory=CommandConfig)
    desktop: DesktopConfig = field(default_factory=DesktopConfig)
    ws: WsConfig = field(default_factory=WsConfig)
    attachments: AttachmentsConfig = field(default_factory=AttachmentsConfig)

    def __post_init__(self) -> None:
        if self.notifier not in NOTIFIERS:
            raise ValueError(
                f"'notifier' must be one of {', '.join(NOTIFIERS)}, not {self.notifier!r}"
            )
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError(
                f"'log_level' must be debug, info, warning or error, not {self.log_level!r}"
            )
        if not 64 <= self.max_message_size <= 64 * 1024 * 1024:
            raise ValueError(
                f"'max_message_size' must be 64 bytes to 64 MiB, not {self.max_message_size}"
            )
        if not 0 < len(self.device_name) <= 128 or not self.device_name.isprintable():
            raise ValueError(f"'device_name' must be 1-128 printable characters, "
                             f"not {self.device_name!r}")  # fmt: skip
        prefix = self.state_topic_prefix
        if not prefix or any(c in prefix for c in "+#\0") or prefix.endswith("/"):
            raise ValueError(
                f"'state_topic_prefix' must be a topic without wildcards, not {prefix!r}"
            )
        if self.quiet_hours is not None and not _HHMM.match(self.quiet_hours):
            raise ValueError(
                f"'quiet_hours' must look like \"22:00-07:00\", not {self.quiet_hours!r}"
            )
        for server in self.servers:
            _check_topics(server, self.topics)


def _check_topics(server: str, topics: tuple[str, ...]) -> None:
    """Each topic against the rules of ``server``'s kind (``agent.topics.topic_problem``);
    an unknown scheme is left to the transport factory, which names the ones it knows."""
    from agent.topics import topic_problem

    scheme = server.split("://", 1)[0].lower() if "://" in server else server.strip().lower()
    if scheme in ("mqtt", "mqtts"):
        kind = "mqtt"
    elif scheme in ("http", "https", "ws", "wss", "auto"):
        kind = "ntfy"
    else:
        return
    for topic in topics:
        problem = topic_problem(kind, topic)
        if problem is not None:
            raise ValueError(f"'topics': {topic!r} cannot be used with {_bare(server)}: {problem}")


def _bare(server: str) -> str:
    """``server`` without a user or password (errors must not show them)."""
    if "://" not in server:
        return server
    scheme, rest = server.split("://", 1)
    host, sep, path = rest.partition("/")
    return f"{scheme}://{host.rpartition('@')[2]}{sep}{path}"


def default_paths(env: Mapping[str, str]) -> Paths:
    """Paths from ``PUSHAGENT_HOME`` / ``PUSHAGENT_CONFIG``, else platformdirs' user dirs."""
    home = env.get("PUSHAGENT_HOME")
    if home:
        root = Path(home).expanduser()
        config_file, data_dir, cache_dir = root / "config.toml", root / "data", root / "cache"
    else:
        import platformdirs  # ~20 ms of imports, not needed when PUSHAGENT_HOME is set

        config_file = Path(platformdirs.user_config_dir(APP)) / "config.toml"
        data_dir = Path(platformdirs.user_data_dir(APP))
        cache_dir = Path(platformdirs.user_cache_dir(APP))
    if env.get("PUSHAGENT_CONFIG"):
        config_file = Path(env["PUSHAGENT_CONFIG"]).expanduser()
    return Paths(config_file=config_file, data_dir=data_dir, cache_dir=cache_dir)


def paths(*, config_file: Path | None = None, env: Mapping[str, str] | None = None) -> Paths:
    """Where things are, without reading the config file (``config path`` works on a broken one)."""
    found = default_paths(os.environ if env is None else env)
    if config_file is not None:
        found = Paths(config_file, found.data_dir, found.cache_dir)
    return found


LOCATION_VARS = ("PUSHAGENT_HOME", "PUSHAGENT_CONFIG")


def location_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The set ``PUSHAGENT_HOME`` / ``PUSHAGENT_CONFIG`` as absolute paths: what an agent
    started later and elsewhere (autostart) needs to find the same config and data."""
    env = os.environ if env is None else env
    return {k: str(Path(env[k]).expanduser().resolve()) for k in LOCATION_VARS if env.get(k)}


def pystray_backend(env: Mapping[str, str] | None = None) -> str | None:
    """``PYSTRAY_BACKEND`` when set: pystray reads it itself; the tray then does not choose."""
    env = os.environ if env is None else env
    return env.get("PYSTRAY_BACKEND") or None


def read_toml(path: Path, *, required: bool) -> dict[str, Any]:
    """The TOML table in ``path``; a missing optional file is an empty table."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: config file not found") from None
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    # Imported only when there is a file: tomllib pulls in datetime and re (~10 ms), a
    # noticeable share of a `pushagent history` that has no config file (bench/store_ingest.py).
    import tomllib

    try:
        with f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def _env_table(env: Mapping[str, str]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    simple = {
        "PUSHAGENT_SERVER": "servers",
        "PUSHAGENT_TOPICS": "topics",
        "PUSHAGENT_NOTIFIER": "notifier",
        "PUSHAGENT_LOG_LEVEL": "log_level",
        "PUSHAGENT_PASSWORD": "auth.password",
        "PUSHAGENT_TOKEN": "auth.token",
    }
    for var, key in simple.items():
        if env.get(var):
            set_dotted(table, key, env[var])
    return table


def load(
    flags: Mapping[str, Any] | None = None,
    *,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> AgentConfig:
    """Build the configuration: config file, then environment, then ``flags`` (dotted keys).

    A config file named explicitly (flag or ``PUSHAGENT_CONFIG``) must exist; the default one
    may be absent.
    """
    env = os.environ if env is None else env
    where = paths(config_file=config_file, env=env)
    explicit = config_file is not None or bool(env.get("PUSHAGENT_CONFIG"))
    file_table = read_toml(where.config_file, required=explicit)
    flag_table: dict[str, Any] = {}
    for key, value in (flags or {}).items():
        if value is not None:
            set_dotted(flag_table, key, value)
    table: dict[str, Any] = {}
    config: AgentConfig | None = None
    for source, layer in (
        (str(where.config_file), file_table),
        ("environment", _env_table(env)),
        ("command line", flag_table),
    ):
        if layer or config is None:
            table = merge(table, layer)
            config = build(AgentConfig, table, where=source, fixed={"paths": where})
    assert config is not None
    return config


def downloads_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where "Save" puts files without ``desktop.downloads``: ``XDG_DOWNLOAD_DIR`` when set,
    else ``~/Downloads`` (read when a file is saved, as a file manager would)."""
    env = os.environ if env is None else env
    if env.get("XDG_DOWNLOAD_DIR"):
        return Path(env["XDG_DOWNLOAD_DIR"]).expanduser()
    home = env.get("HOME")
    return (Path(home) if home else Path.home()) / "Downloads"


def shown(config: AgentConfig) -> dict[str, Any]:
    """The configuration as a plain dict for ``config show``, secrets masked."""
    from dataclasses import asdict

    data = asdict(config)
    data["paths"] = {
        "config_file": str(config.paths.config_file),
        "data_dir": str(config.paths.data_dir),
        "cache_dir": str(config.paths.cache_dir),
        "database": str(config.paths.db),
    }
    for secret in ("password", "token"):
        if data["auth"].get(secret):
            data["auth"][secret] = MASK
    plain: dict[str, Any] = _plain(data)
    return plain


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
