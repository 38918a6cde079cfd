"""Passwords: the OS keyring (the only keyring importer), a 0600 file, or the environment.

Order at connect time: a password in the server URL, ``PUSHAGENT_PASSWORD`` (``auth.password``),
``auth.password_file``, then the keyring entry ``pushagent login`` stored for that server.
Passwords are never logged; ``config show`` masks them (``agent.config.shown``).

Keyring layout: service ``pushagent:<server>`` holds the password under the user name, and
service ``pushagent`` remembers which user logged in to ``<server>`` (so ``logout SERVER``
and a URL without a user name both work).
"""

from __future__ import annotations

import logging
import stat
import urllib.parse
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.errors import AuthError, ConfigError

SERVICE = "pushagent"
log = logging.getLogger("pushagent.secrets")


def server_key(server: str) -> str:
    """The keyring name of a server: scheme://host:port, without user or password."""
    parts = urllib.parse.urlsplit(server if "://" in server else f"mqtt://{server}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"server {server!r}: {exc}") from None
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def _keyring() -> Any:
    try:
        import keyring
        import keyring.errors
    except ImportError as exc:  # pragma: no cover - keyring is a core dependency
        raise ConfigError(f"the keyring package is missing ({exc})") from None
    return keyring


def _call(what: str, func: Any, *args: str) -> Any:
    kr = _keyring()
    try:
        return func(*args)
    except kr.errors.NoKeyringError:
        raise AuthError(
            f"cannot {what}: no OS keyring is available here; use 'password_file' in the "
            "config (mode 0600) or the PUSHAGENT_PASSWORD environment variable"
        ) from None
    except kr.errors.KeyringError as exc:
        raise AuthError(f"cannot {what}: the keyring failed: {type(exc).__name__}") from None


def store_password(server: str, user: str, password: str) -> None:
    """Remember ``user``'s password for ``server`` in the OS keyring."""
    kr = _keyring()
    key = server_key(server)
    _call("store the password", kr.set_password, f"{SERVICE}:{key}", user, password)
    _call("store the password", kr.set_password, SERVICE, key, user)


def stored_user(server: str) -> str | None:
    """The user that last logged in to ``server``, if any."""
    kr = _keyring()
    user = _call("read the keyring", kr.get_password, SERVICE, server_key(server))
    return str(user) if user else None


def get_password(server: str, user: str) -> str | None:
    """The keyring's password for ``user`` at ``server``, or None."""
    kr = _keyring()
    pw = _call("read the keyring", kr.get_password, f"{SERVICE}:{server_key(server)}", user)
    return str(pw) if pw is not None else None


def delete_password(server: str) -> bool:
    """Forget the login for ``server``; False if there was none."""
    kr = _keyring()
    key = server_key(server)
    user = stored_user(server)
    if user is None:
        return False
    for service, name in ((f"{SERVICE}:{key}", user), (SERVICE, key)):
        try:
            kr.delete_password(service, name)
        except kr.errors.PasswordDeleteError:
            log.debug("no keyring entry %s/%s to delete", service, name)
        except kr.errors.KeyringError as exc:
            raise AuthError(f"cannot delete the password: {type(exc).__name__}") from None
    return True


def read_password_file(path: Path) -> str:
    """The password in ``path`` (first line); refuse a file others can read."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"auth.password_file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"auth.password_file {path}: must be readable by you only (mode 0600), "
            f"not {stat.S_IMODE(mode):04o}; run: chmod 600 {path}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"auth.password_file {path}: cannot read: {exc}") from None
    return text.splitlines()[0] if text else ""


def credentials(
    cfg: AgentConfig, server: str, url_user: str | None
) -> tuple[str | None, str | None]:
    """``(user, password)`` for ``server`` from the config, the environment or the keyring."""
    user = url_user or cfg.auth.username
    if cfg.auth.password:
        return user, cfg.auth.password
    if cfg.auth.password_file is not None:
        return user, read_password_file(cfg.auth.password_file)
    try:
        user = user or stored_user(server)
        if user is None:
            return None, None
        return user, get_password(server, user)
    except AuthError:
        return user, None  # no keyring on this device: anonymous, as configured


# --- access tokens (ntfy-compatible servers and relays) ------------------------------------

TOKEN_SERVICE = "pushagent-token"  # noqa: S105 - a keyring service name, not a secret


def token_key(server: str) -> str:
    """The keyring name of an ntfy server: its canonical http(s) base, so ws:// and http://
    forms of one server share a token."""
    from agent.ntfy import parse_server

    return parse_server(server).http_base


def store_token(server: str, token: str) -> None:
    """Remember an access token for ``server`` in the OS keyring."""
    kr = _keyring()
    _call("store the token", kr.set_password, TOKEN_SERVICE, token_key(server), token)


def get_token(server: str) -> str | None:
    """The keyring's token for ``server``, or None."""
    kr = _keyring()
    token = _call("read the keyring", kr.get_password, TOKEN_SERVICE, token_key(server))
    return str(token) if token else None


def delete_token(server: str) -> bool:
    """Forget the token for ``server``; False if there was none."""
    kr = _keyring()
    if get_token(server) is None:
        return False
    _call("delete the token", kr.delete_password, TOKEN_SERVICE, token_key(server))
    return True


def token_for(cfg: AgentConfig, server: str) -> str | None:
    """The token to send to ``server``: ``PUSHAGENT_TOKEN`` (``auth.token``), else the keyring."""
    if cfg.auth.token:
        return cfg.auth.token
    try:
        return get_token(server)
    except AuthError:
        return None  # no keyring on this device: anonymous, as configured
