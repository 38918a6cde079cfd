"""Keys of encrypted topics: made, derived, named and written down. No I/O but the RNG.

* A key is 32 random bytes (``os.urandom``), or PBKDF2-HMAC-SHA256 of a passphrase with the
  salt ``edgepush-e2e:<topic>`` and 600,000 iterations (OWASP's 2023 figure for
  PBKDF2-SHA256), for publishers that can hold only a passphrase. The salt is per topic and
  derivable, so such a publisher needs nothing but the passphrase and the topic name.
* Its ``kid`` is the first 16 characters of its RFC 7638 JWK thumbprint: the same key has
  the same name everywhere, a publisher in another language can compute it, and it says
  nothing about the key (a truncated SHA-256).
* The export string is ``ek1.`` and the key in base64url (the JWK's ``k``): 47 characters
  to copy; import takes that or the bare ``k``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re

from agent.e2e.jwe import KEY_BYTES

ITERATIONS = 600_000
SALT_PREFIX = b"edgepush-e2e:"
EXPORT_PREFIX = "ek1."
KID_LENGTH = 16
_K = re.compile(r"[A-Za-z0-9_-]{43}")


def new_key() -> bytes:
    """A fresh 256-bit key."""
    return os.urandom(KEY_BYTES)


def from_passphrase(passphrase: str, topic: str, *, iterations: int = ITERATIONS) -> bytes:
    """The key a passphrase gives on ``topic`` (PBKDF2-HMAC-SHA256, per-topic salt)."""
    if not passphrase:
        raise ValueError("the passphrase is empty")
    salt = SALT_PREFIX + topic.encode("utf-8")
    return hashlib.pbkdf2_hmac("sha256", passphrase.encode("utf-8"), salt, iterations, KEY_BYTES)


def kid_of(key: bytes) -> str:
    """The key's id: its RFC 7638 thumbprint, cut to 16 characters."""
    from joserfc.jwk import OctKey

    return str(OctKey.import_key(key).thumbprint())[:KID_LENGTH]


def export(key: bytes) -> str:
    """The string a user copies to another device or a publisher."""
    return EXPORT_PREFIX + base64.urlsafe_b64encode(key).rstrip(b"=").decode("ascii")


def parse(text: str) -> bytes:
    """The key in an export string (or a bare JWK ``k``); ValueError naming what is wrong."""
    text = text.strip()
    body = text.removeprefix(EXPORT_PREFIX)
    if not _K.fullmatch(body):
        raise ValueError(
            f"not a key: expected {EXPORT_PREFIX} and 43 base64url characters "
            f"(what 'pushagent key export' prints), got {len(text)} characters"
        )
    try:
        key = base64.urlsafe_b64decode(body + "=")
    except (binascii.Error, ValueError):
        raise ValueError("not a key: the base64url part does not decode") from None
    if len(key) != KEY_BYTES:  # pragma: no cover - 43 characters always decode to 32 bytes
        raise ValueError(f"not a key: {len(key)} bytes, not {KEY_BYTES}")
    return key
