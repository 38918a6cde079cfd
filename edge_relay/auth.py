"""Access tokens: a JSON auth file holding only token hashes and read/write topic patterns.

File format (written by ``edge-relay token ...``; hand-editable)::

    {"anonymous": {"read": ["public*"], "write": []},
     "tokens": {"alice": {"hash": "<sha256 hex>", "read": ["*"], "write": ["alerts"],
                          "created": 1700000000}}}

Tokens are 32 random characters (``tk_`` + 29), so a plain SHA-256 is enough: there is no
password to brute-force. With no auth file every request is allowed; with one, a request
without a token gets only what ``anonymous`` grants (nothing, unless the file says so).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agent.errors import AuthError, ConfigError, UsageError
from agent.private import private_dir
from agent.topics import glob_match

Mode = Literal["read", "write"]
_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True)
class Grant:
    """What one identity may do: topic patterns (``*`` = any characters) per mode."""

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()

    def allows(self, mode: Mode, topic: str) -> bool:
        patterns = self.read if mode == "read" else self.write
        return any(glob_match(p, topic) for p in patterns)


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    grant: Grant


ANONYMOUS_OPEN = Identity("anonymous", Grant(("*",), ("*",)))


@dataclass
class AuthDB:
    """The parsed auth file: anonymous grant and tokens by hash."""

    anonymous: Grant = field(default_factory=Grant)
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)

    def identify(self, token: str | None) -> Identity:
        """The identity for a token (None: anonymous); AuthError for an unknown token."""
        if token is None:
            return Identity("anonymous", self.anonymous)
        digest = hash_token(token)
        for name, entry in self.tokens.items():
            if hmac.compare_digest(str(entry.get("hash", "")), digest):
                return Identity(name, Grant(tuple(entry["read"]), tuple(entry["write"])))
        raise AuthError("unknown or revoked token")


def new_token() -> str:
    """A fresh access token in ntfy's shape (``tk_`` + 29 characters)."""
    return "tk_" + "".join(secrets.choice(_ALPHABET) for _ in range(29))


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def token_from_request(authorization: str | None, auth_param: str | None) -> str | None:
    """The bearer token from ``Authorization`` or ntfy's ``?auth=`` (base64 of that header).

    ntfy encodes the whole header value (``Bearer tk_...``) as base64 without padding; both
    the standard and URL-safe alphabets are accepted. AuthError for anything malformed.
    """
    header = authorization
    if auth_param is not None:
        try:
            raw = auth_param.strip()
            raw += "=" * (-len(raw) % 4)
            decoded = base64.b64decode(raw.replace("-", "+").replace("_", "/"), validate=True)
            header = decoded.decode("utf-8")
        except (binascii.Error, ValueError):
            raise AuthError(
                "the auth= parameter is not base64 of an Authorization header"
            ) from None
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise AuthError("only 'Authorization: Bearer <token>' is supported")
    return value.strip()


def load(path: Path) -> AuthDB:
    """Read the auth file; a missing file is an empty one (everything denied)."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return AuthDB()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read auth file: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the auth file must hold a JSON object")
    anon = data.get("anonymous") or {}
    tokens = data.get("tokens") or {}
    if not isinstance(anon, dict) or not isinstance(tokens, dict):
        raise ConfigError(f"{path}: 'anonymous' and 'tokens' must be objects")
    for name, entry in tokens.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("hash"), str):
            raise ConfigError(f"{path}: token {name!r} has no 'hash'")
        entry.setdefault("read", [])
        entry.setdefault("write", [])
    grant = Grant(tuple(anon.get("read", ())), tuple(anon.get("write", ())))
    return AuthDB(grant, tokens)


def save(path: Path, db: AuthDB) -> None:
    """Write the auth file atomically, readable only by its owner."""
    data = {
        "anonymous": {"read": list(db.anonymous.read), "write": list(db.anonymous.write)},
        "tokens": db.tokens,
    }
    private_dir(path.parent)  # 0700 if we create it (agent.private)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def add_token(path: Path, name: str, read: Sequence[str], write: Sequence[str]) -> str:
    """Create token ``name`` with the given patterns; return the token (shown once)."""
    if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").isalnum():
        raise UsageError(f"token name {name!r}: use 1-64 letters, digits, '-' or '_'")
    db = load(path)
    if name in db.tokens:
        raise UsageError(f"a token named {name!r} exists; revoke it first")
    token = new_token()
    db.tokens[name] = {
        "hash": hash_token(token),
        "read": list(read),
        "write": list(write),
        "created": int(time.time()),
    }
    save(path, db)
    return token


def revoke_token(path: Path, name: str) -> None:
    db = load(path)
    if db.tokens.pop(name, None) is None:
        raise UsageError(f"no token named {name!r} in {path}")
    save(path, db)


def set_anonymous(path: Path, read: Sequence[str], write: Sequence[str]) -> None:
    db = load(path)
    db.anonymous = Grant(tuple(read), tuple(write))
    save(path, db)
