"""Access tokens: a JSON auth file holding only token hashes and read/write topic patterns.

File format (written by ``edge-relay token ...``; hand-editable)::

    {"anonymous": {"read": ["public*"], "write": []},
     "tokens": {"alice": {"hash": "<sha256 hex>", "read": ["*"], "write": ["alerts"],
                          "created": 1700000000},
                "owner": {"hash": "<sha256 hex>", "read": ["*"], "write": ["*"],
                          "admin": true, "created": 1700000000}}}

``admin`` (optional, default false; ``edge-relay token add NAME --admin``) is the grant the
relay's own management API asks for (``/v1/tokens``, ``/v1/admin/overview``:
``edge_relay.admin``); read/write patterns still decide which topics the token reaches.

Tokens are 32 random characters (``tk_`` + 29), so a plain SHA-256 is enough: there is no
password to brute-force. With no auth file every request is allowed; with one, a request
without a token gets only what ``anonymous`` grants (nothing, unless the file says so).

``load`` validates the file against that format (``parse``): lists of patterns a relay topic
can match, SHA-256 hashes, objects where objects belong. A hand edit such as
``"read": "home*"`` used to become ``tuple("home*")``, which holds ``"*"``: read on every
topic. What the relay does with an invalid file is in ``edge_relay.state.RelayState.authdb``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import string
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agent.errors import AuthError, ConfigError, UsageError
from agent.private import private_dir
from agent.topics import glob_match

Mode = Literal["read", "write"]
_ALPHABET = string.ascii_letters + string.digits
_HASH_RE = re.compile(r"[0-9a-f]{64}")
_PATTERN_RE = re.compile(r"[-_A-Za-z0-9*]{1,64}")
_NAME_RE = re.compile(r"[-_A-Za-z0-9]{1,64}")


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
    """Who a request is: a token's name (or ``anonymous``), its grant, and its hash.

    ``digest`` (the token's SHA-256, "" for anonymous) is what an open stream keeps to be
    re-checked against a changed auth file: a token revoked and re-added under the same name
    is a different token.
    """

    name: str
    grant: Grant
    digest: str = ""
    admin: bool = False
    """The ``admin`` grant: may use the relay's management API (``edge_relay.admin``)."""


ANONYMOUS_OPEN = Identity("anonymous", Grant(("*",), ("*",)), admin=True)
"""Everyone, on a relay without an auth file: everything is allowed, management included
(tokens cannot be managed there: there is no file to hold them)."""


@dataclass
class AuthDB:
    """The parsed auth file: anonymous grant and tokens by hash."""

    anonymous: Grant = field(default_factory=Grant)
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)

    def identify(self, token: str | None) -> Identity:
        """The identity for a token (None: anonymous); AuthError for an unknown token."""
        if token is None:
            return Identity("anonymous", self.anonymous)
        found = self.by_digest(hash_token(token))
        if found is None:
            raise AuthError("unknown or revoked token")
        return found

    def by_digest(self, digest: str) -> Identity | None:
        """The identity holding the token with this hash ("" = anonymous); None if gone."""
        if not digest:
            return Identity("anonymous", self.anonymous)
        for name, entry in self.tokens.items():
            if hmac.compare_digest(str(entry["hash"]), digest):
                grant = Grant(tuple(entry["read"]), tuple(entry["write"]))
                return Identity(name, grant, digest, admin=entry.get("admin") is True)
        return None


def new_token() -> str:
    """A fresh access token in ntfy's shape (``tk_`` + 29 characters)."""
    return "tk_" + "".join(secrets.choice(_ALPHABET) for _ in range(29))


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def token_from_request(authorization: str | None, auth_param: str | None) -> str | None:
    """The token from ``Authorization`` or ntfy's ``?auth=`` (base64 of that header).

    As ntfy's server reads it (``authenticate`` in its ``server/server.go``): ``Bearer <token>``,
    or ``Basic base64(":<token>")`` — an empty user name and the token as the password, how
    ``curl -u :tk_...`` and python-ntfy send a token. A user name with a password is refused
    (the relay has tokens, no users); any other scheme (``WebPush``, ``vapid``) is not a
    credential and counts as none, as on ntfy. ``?auth=`` is ntfy's base64 of the header
    value without padding (standard or URL-safe alphabet). AuthError for anything malformed.
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
    if scheme.lower() == "basic":
        return _basic_token(value.strip())
    if scheme.lower() != "bearer":
        return None
    if not value.strip():
        raise AuthError("'Authorization: Bearer' without a token")
    return value.strip()


def _basic_token(value: str) -> str:
    try:
        user, colon, password = (
            base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        )
    except (binascii.Error, ValueError):
        raise AuthError("'Authorization: Basic' is not base64 of user:password") from None
    if not colon or user or not password:
        raise AuthError(
            "user/password login is not supported: send a token as the password with an "
            "empty user name (curl -u :tk_...), or 'Authorization: Bearer <token>'"
        )
    return password


def load(path: Path) -> AuthDB:
    """Read and validate the auth file; a missing file is an empty one (everything denied).

    ConfigError (one line naming the file and the problem) for anything that is not exactly
    the format above: a hand edit such as ``"read": "home*"`` (a string) must be refused,
    not read as the characters ``h o m e *`` (which held ``*``: read on every topic).
    """
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return AuthDB()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read auth file: {exc}") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"{path}: cannot read auth file: {_one_line(exc)}") from None
    try:
        return parse(data)
    except ValueError as exc:
        raise ConfigError(f"{path}: invalid auth file: {exc}") from None


def parse(data: object) -> AuthDB:
    """The auth file's JSON value as an AuthDB; ValueError naming the first problem."""
    if not isinstance(data, dict):
        raise ValueError("the auth file must hold a JSON object")
    if unknown := sorted(set(data) - {"anonymous", "tokens"}):
        raise ValueError(f"unknown key {unknown[0]!r} (expected 'anonymous' and 'tokens')")
    anon = data.get("anonymous") or {}  # null or missing: nothing granted (as before)
    tokens = data.get("tokens") or {}
    if not isinstance(anon, dict):
        raise ValueError("'anonymous' must be an object with 'read' and 'write' lists")
    if not isinstance(tokens, dict):
        raise ValueError("'tokens' must be an object of token entries by name")
    grant = _grant(anon, "anonymous")
    checked: dict[str, dict[str, Any]] = {}
    for name, item in tokens.items():
        check_name(name)
        if not isinstance(item, dict):
            raise ValueError(f"token {name!r} must be an object")
        digest = item.get("hash")
        if not isinstance(digest, str) or not _HASH_RE.fullmatch(digest):
            raise ValueError(f"token {name!r}: 'hash' must be 64 lowercase hex digits (SHA-256)")
        g = _grant(item, f"token {name!r}")
        if not isinstance(item.get("admin", False), bool):
            raise ValueError(f"token {name!r}: 'admin' must be true or false")
        checked[name] = {**item, "read": list(g.read), "write": list(g.write)}
    return AuthDB(grant, checked)


def _grant(obj: dict[str, Any], who: str) -> Grant:
    modes: dict[str, tuple[str, ...]] = {}
    for mode in ("read", "write"):
        value = obj.get(mode, [])
        if not isinstance(value, list):
            raise ValueError(
                f"{who}: {mode!r} must be a list of topic patterns, not {type(value).__name__}"
            )
        modes[mode] = tuple(check_pattern(p, f"{who}: {mode!r}") for p in value)
    return Grant(modes["read"], modes["write"])


def check_pattern(pattern: object, where: str = "pattern") -> str:
    """A topic pattern: 1-64 of a relay topic's characters, plus ``*`` (any run of them).

    Anything else could never match a relay topic (``home/*``), so it is an error, not a
    pattern that silently grants nothing.
    """
    if not isinstance(pattern, str):
        raise ValueError(f"{where}: a pattern must be a string, not {type(pattern).__name__}")
    if not _PATTERN_RE.fullmatch(pattern):
        shown = repr(pattern[:40])
        raise ValueError(f"{where}: pattern {shown} is not 1-64 letters, digits, '-', '_' or '*'")
    return pattern


def check_name(name: str) -> str:
    """A token name: 1-64 letters, digits, '-' or '_' (shown in logs and receipts)."""
    if not _NAME_RE.fullmatch(name) or name == "anonymous":
        raise ValueError(f"token name {name[:70]!r}: use 1-64 letters, digits, '-' or '_'")
    return name


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


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


@contextlib.contextmanager
def _editing(path: Path) -> Iterator[AuthDB]:
    """The auth file, loaded under an exclusive lock and saved when the block ends.

    The lock is a ``flock`` on the file's folder (whose inode, unlike the file's, survives
    the atomic replace), so ``edge-relay token ...`` and the relay's ``/v1/tokens`` never
    interleave a load and a save and lose each other's change. OSError (a read-only folder,
    as a systemd credential is) says where.
    """
    private_dir(path.parent)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        db = load(path)
        yield db
        save(path, db)
    finally:
        os.close(fd)  # closing releases the lock


def entry_of(name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """A token as the management API shows it: never its hash."""
    return {"name": name, "read": list(entry["read"]), "write": list(entry["write"]),
            "admin": entry.get("admin") is True, "created": entry.get("created")}  # fmt: skip


def add_token(
    path: Path, name: str, read: Sequence[str], write: Sequence[str], *, admin: bool = False
) -> str:
    """Create token ``name`` with the given patterns; return the token (shown once)."""
    try:
        check_name(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _check_flags(read, write)
    token = new_token()
    with _editing(path) as db:
        if name in db.tokens:
            raise UsageError(f"a token named {name!r} exists; revoke it first")
        db.tokens[name] = {
            "hash": hash_token(token),
            "read": list(read),
            "write": list(write),
            "created": int(time.time()),
        }
        if admin:
            db.tokens[name]["admin"] = True
    return token


def revoke_token(path: Path, name: str, *, keep_an_admin: bool = False) -> None:
    """Delete token ``name``. ``keep_an_admin``: refuse to delete the last admin token (the
    management API: an admin page must not lock everyone out of itself)."""
    with _editing(path) as db:
        entry = db.tokens.get(name)
        if entry is None:
            raise UsageError(f"no token named {name!r} in {path}")
        admins = [n for n, e in db.tokens.items() if e.get("admin") is True]
        if keep_an_admin and admins == [name]:
            raise UsageError(f"token {name!r} is the last admin token; add another first")
        del db.tokens[name]


def set_anonymous(path: Path, read: Sequence[str], write: Sequence[str]) -> None:
    _check_flags(read, write)
    with _editing(path) as db:
        db.anonymous = Grant(tuple(read), tuple(write))


def _check_flags(read: Sequence[str], write: Sequence[str]) -> None:
    try:
        for mode, patterns in (("read", read), ("write", write)):
            for p in patterns:
                check_pattern(p, f"--{mode}")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
