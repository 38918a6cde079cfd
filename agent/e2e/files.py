"""Attachments of encrypted messages: each file sealed with its own key, carried inside the JWE.

Format (docs/E2E.md, the contract for other publishers):

* per file a fresh 256-bit key; the uploaded file is ``nonce || ciphertext || tag``: a 12-byte
  random nonce, then AES-256-GCM of the file's bytes under that key with no additional data
  (the content encryption of JWE's ``A256GCM``, without the base64url that would make a file
  a third larger). What a server stores is 28 bytes longer than the file, under a neutral
  name (``attachment.bin``) and, sniffed, ``application/octet-stream``.
* inside the encrypted envelope, the ``attachment`` object names the file as the user knows
  it -- ``name``, ``type``, ``size`` (of the plaintext) -- with ``enc: "A256GCM"`` and
  ``key``, the file key in base64url (43 characters, a JWK's ``k``). Its ``url`` may be
  there too (a file hosted elsewhere); without one, the URL is the server's, from the
  attachment object outside (``located``): a server that swaps the file cannot make it
  open, as the key and the tag are inside.

The cryptography is ``cryptography``'s AESGCM (the library under joserfc); this module only
lays the bytes out. ``open_download`` is the agent's hook, called by agent.attachments after
a download and before its checks: the ciphertext file is replaced by the plaintext (0600) or
refused as a whole.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.e2e.jwe import KEY_BYTES
from agent.errors import MessageError
from agent.private import create_private

ENC = "A256GCM"
NONCE = 12
TAG = 16
OVERHEAD = NONCE + TAG
UPLOAD_NAME = "attachment.bin"
_LOCATION = ("url", "expires")


class FileDecryptError(MessageError):
    """An encrypted attachment that does not open: a damaged key, or changed bytes."""

    def __init__(self, text: str) -> None:
        super().__init__(text, field="attachment")


def seal_file(data: bytes) -> tuple[bytes, dict[str, str]]:
    """``data`` encrypted under a fresh key: (what to upload, ``{"enc", "key"}`` for the
    attachment object inside the envelope)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key, nonce = os.urandom(KEY_BYTES), os.urandom(NONCE)
    blob = nonce + AESGCM(key).encrypt(nonce, data, None)
    return blob, {"enc": ENC, "key": base64.urlsafe_b64encode(key).rstrip(b"=").decode()}


def reseal_file(att: Mapping[str, Any], data: bytes) -> bytes:
    """``data`` (a file that opened under ``att``'s key) sealed again under that key, with a
    fresh nonce: what goes back into the message row when the agent's cache lets the
    plaintext go (agent.attachments). FileDecryptError when ``att`` has no usable key."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if att.get("enc") != ENC:
        raise FileDecryptError(f"encrypted attachment: enc {str(att.get('enc'))[:20]!r} refused")
    nonce = os.urandom(NONCE)
    return nonce + AESGCM(_key(att.get("key"))).encrypt(nonce, data, None)


def is_sealed(att: Mapping[str, Any]) -> bool:
    """Whether an attachment object describes an encrypted file (it carries its key)."""
    return "key" in att


def open_file(att: Mapping[str, Any], blob: bytes) -> bytes:
    """The plaintext of ``blob`` under ``att``'s key; FileDecryptError otherwise."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if att.get("enc") != ENC:
        raise FileDecryptError(f"encrypted attachment: enc {str(att.get('enc'))[:20]!r} refused")
    key = _key(att.get("key"))
    if len(blob) < OVERHEAD:
        raise FileDecryptError(f"encrypted attachment: {len(blob)} bytes is too short")
    try:
        return AESGCM(key).decrypt(blob[:NONCE], blob[NONCE:], None)
    except InvalidTag:
        why = "encrypted attachment does not open: tampered or truncated"
        raise FileDecryptError(why) from None


def located(inner: Mapping[str, Any], outer: Mapping[str, Any] | None) -> dict[str, Any]:
    """The decrypted attachment object, with the server's ``url``/``expires`` from outside
    when it is an encrypted file that names no location of its own."""
    out = dict(inner)
    if outer is not None and is_sealed(inner) and "url" not in inner:
        out.update((k, outer[k]) for k in _LOCATION if k in outer)
    return out


def open_download(att: Mapping[str, Any], tmp: Path, head_bytes: int) -> tuple[int, bytes]:
    """Replace the downloaded ciphertext in ``tmp`` by its plaintext (0600, same folder);
    (size, first ``head_bytes``). FileDecryptError (``tmp`` left to the caller) if it does
    not open: nothing of a changed file is kept."""
    plain = open_file(att, tmp.read_bytes())
    out = tmp.with_name(tmp.name + "-plain")  # still .tmp-*: cleaned after a crash
    create_private(out, plain)
    os.replace(out, tmp)
    return len(plain), plain[:head_bytes]


def _key(value: Any) -> bytes:
    if not isinstance(value, str) or len(value) != 43:
        raise FileDecryptError("encrypted attachment: its key is not 43 base64url characters")
    try:
        key = base64.urlsafe_b64decode(value + "=")
    except (binascii.Error, ValueError):
        raise FileDecryptError("encrypted attachment: its key does not decode") from None
    if len(key) != KEY_BYTES:
        raise FileDecryptError("encrypted attachment: its key is not 32 bytes")
    return key
