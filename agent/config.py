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

from agent.config_sections import (
    DOWNLOAD_MODES,
    AttachmentsConfig,
    AuthConfig,
    Burst,
    CommandConfig,
    DesktopConfig,
    MqttConfig,
    ReceiptsConfig,
    Rule,
    StoreConfig,
    TlsConfig,
    WsConfig,
)
from agent.envelope import DEFAULT_MAX_SIZE
from agent.errors import ConfigError
from agent.settings import build, merge, set_dotted

# The sections live in agent.config_sections; agent.config is where every name is imported from.
__all__ = [
    "APP",
    "DOWNLOAD_MODES",
    "LOCATION_VARS",
    "MASK",
    "NOTIFIERS",
    "AgentConfig",
    "AttachmentsConfig",
    "AuthConfig",
    "Burst",
    "CommandConfig",
    "DesktopConfig",
    "MqttConfig",
    "Paths",
    "ReceiptsConfig",
    "Rule",
    "StoreConfig",
    "TlsConfig",
    "WsConfig",
    "default_paths",
    "downloads_dir",
    "load",
    "location_env",
    "paths",
    "pystray_backend",
    "read_toml",
    "shown",
]

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
