"""Passwords: the OS keyring (the only keyring importer), a 0600 file, or the environment.

Order at connect time: a password in the server URL, ``PUSHAGENT_PASSWORD`` (``auth.password``),
``auth.password_file``, the keyring entry ``pushagent login`` stored for that server, then the
0600 file ``login`` writes on a machine with no usable keyring (``agent.secretfile``).
Passwords are never logged; ``config show`` masks them (``agent.config.shown``).

Keyring layout: service ``pushagent:<server>`` holds the password under the user name, and
service ``pushagent`` remembers which user logged in to ``<server>`` (so ``logout SERVER``
and a URL without a user name both work).

The login index: opening the keyring costs ~0.4 s and ~25 MB on a Linux desktop (its backends
pull in D-Bus and cryptography; measured with ``bench/agent_footprint.py``), more than all the
rest of the agent's start. So ``pushagent login`` also records the NAMES of the entries it made
(never a secret) in ``<data dir>/logins.json``, and the agent asks the keyring only about
servers listed there. A device nobody logged in on never loads the keyring at all.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from pathlib import Path
from typing import Any

from agent import secretfile
from agent.config import AgentConfig
from agent.errors import AuthError, ConfigError
from agent.private import read_private, write_private

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


# --- the login index: which servers have keyring entries -----------------------------------


def _index_path(cfg: AgentConfig) -> Path:
    return cfg.paths.data_dir / "logins.json"


def _read_index(cfg: AgentConfig) -> dict[str, list[str]]:
    try:
        data = json.loads(_index_path(cfg).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"passwords": [], "tokens": []}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable login index %s: %s", _index_path(cfg), exc)
        return {"passwords": [], "tokens": []}
    return {k: [str(v) for v in data.get(k, [])] for k in ("passwords", "tokens")}


def _set_indexed(cfg: AgentConfig, kind: str, key: str, present: bool) -> None:
    index = _read_index(cfg)
    names = [n for n in index[kind] if n != key] + ([key] if present else [])
    index[kind] = sorted(names)
    # atomic: a crash never leaves half an index; 0600 in a 0700 folder (agent.private)
    write_private(_index_path(cfg), (json.dumps(index, indent=1) + "\n").encode())


def _keyring() -> Any:
    try:
        import keyring
        import keyring.errors
    except ImportError as exc:  # pragma: no cover - keyring is a core dependency
        raise ConfigError(f"the keyring package is missing ({exc})") from None
    return keyring


# keyring's stand-ins when no real backend is found: "null" accepts a password and keeps
# nothing (login answered "stored"), "fail" raises NoKeyringError. Both mean: no keyring.
KEEPS_NOTHING = ("keyring.backends.null", "keyring.backends.fail")


def no_keyring() -> bool:
    """True when keyring has no backend that keeps secrets here (null, fail, or none)."""
    kr = _keyring()
    try:
        backend = kr.get_keyring()
    except kr.errors.NoKeyringError:
        return True
    if type(backend).__module__ in KEEPS_NOTHING:
        return True
    inner = getattr(backend, "backends", None)  # keyring's chainer: none of its own left
    return isinstance(inner, list) and all(type(b).__module__ in KEEPS_NOTHING for b in inner)


def _call(what: str, func: Any, *args: str) -> Any:
    kr = _keyring()
    try:
        if no_keyring():
            raise kr.errors.NoKeyringError(type(kr.get_keyring()).__module__)
        return func(*args)
    except kr.errors.NoKeyringError:
        raise AuthError(
            f"cannot {what}: no OS keyring is available here; use 'password_file' in the "
            "config (mode 0600) or the PUSHAGENT_PASSWORD environment variable"
        ) from None
    except kr.errors.KeyringError as exc:
        raise AuthError(f"cannot {what}: the keyring failed: {type(exc).__name__}") from None


def store_password(cfg: AgentConfig, server: str, user: str, password: str) -> Path | None:
    """Remember ``user``'s password for ``server`` in the OS keyring; with no usable keyring,
    in the 0600 secrets file, whose path is returned (None: in the keyring)."""
    kr = _keyring()
    key = server_key(server)
    if no_keyring():
        return secretfile.put(cfg, "passwords", key, {"user": user, "password": password})
    _call("store the password", kr.set_password, f"{SERVICE}:{key}", user, password)
    _call("store the password", kr.set_password, SERVICE, key, user)
    _set_indexed(cfg, "passwords", key, True)
    return None


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


def delete_password(cfg: AgentConfig, server: str) -> bool:
    """Forget the login for ``server`` (keyring and secrets file); False if there was none."""
    kr = _keyring()
    key = server_key(server)
    in_file = secretfile.delete(cfg, "passwords", key)
    if no_keyring():
        return in_file
    _set_indexed(cfg, "passwords", key, False)
    user = stored_user(server)
    if user is None:
        return in_file
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
    text = read_private(path, f"auth.password_file {path}") or ""
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
    if server_key(server) in _read_index(cfg)["passwords"]:  # else: do not load the keyring
        try:
            found = user or stored_user(server)
            password = get_password(server, found) if found else None
            if password is not None:
                return found, password
        except AuthError:
            pass  # no keyring on this device (any more): the secrets file, else anonymous
    saved = secretfile.get(cfg, "passwords", server_key(server))
    if isinstance(saved, dict) and user in (None, saved.get("user")):
        return str(saved.get("user")), str(saved.get("password"))
    return user, None


# --- access tokens (ntfy-compatible servers and relays) ------------------------------------

TOKEN_SERVICE = "pushagent-token"  # noqa: S105 - a keyring service name, not a secret


def token_key(server: str) -> str:
    """The keyring name of an ntfy server: its canonical http(s) base, so ws:// and http://
    forms of one server share a token."""
    from agent.ntfy import parse_server

    return parse_server(server).http_base


def store_token(cfg: AgentConfig, server: str, token: str) -> Path | None:
    """Remember an access token for ``server`` in the OS keyring; with no usable keyring, in
    the 0600 secrets file, whose path is returned (None: in the keyring)."""
    kr = _keyring()
    if no_keyring():
        return secretfile.put(cfg, "tokens", token_key(server), token)
    _call("store the token", kr.set_password, TOKEN_SERVICE, token_key(server), token)
    _set_indexed(cfg, "tokens", token_key(server), True)
    return None


def get_token(server: str) -> str | None:
    """The keyring's token for ``server``, or None."""
    kr = _keyring()
    token = _call("read the keyring", kr.get_password, TOKEN_SERVICE, token_key(server))
    return str(token) if token else None


def delete_token(cfg: AgentConfig, server: str) -> bool:
    """Forget the token for ``server`` (keyring and secrets file); False if there was none."""
    kr = _keyring()
    in_file = secretfile.delete(cfg, "tokens", token_key(server))
    if no_keyring():
        return in_file
    _set_indexed(cfg, "tokens", token_key(server), False)
    if get_token(server) is None:
        return in_file
    _call("delete the token", kr.delete_password, TOKEN_SERVICE, token_key(server))
    return True


def token_for(cfg: AgentConfig, server: str) -> str | None:
    """The token to send to ``server``: ``PUSHAGENT_TOKEN`` (``auth.token``), else the keyring."""
    if cfg.auth.token:
        return cfg.auth.token
    if token_key(server) in _read_index(cfg)["tokens"]:  # else: do not load the keyring
        try:
            token = get_token(server)
            if token is not None:
                return token
        except AuthError:
            pass  # no keyring on this device (any more): the secrets file, else anonymous
    saved = secretfile.get(cfg, "tokens", token_key(server))
    return str(saved) if isinstance(saved, str) and saved else None
