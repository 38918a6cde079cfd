"""The wire format of encrypted messages: JWE compact serialization, ``dir`` + ``A256GCM``.

No I/O, no crypto of our own: joserfc seals; opening is ``cryptography``'s AES-GCM (the
primitive joserfc's A256GCM uses, ``_aead``) after this module's checks, which decide what is
accepted before a key is even looked up, so a hostile token costs a few string checks.

Accepted (everything else is a ``DecryptError`` naming why, never another exception):

* five base64url segments, the second (the encrypted key) empty, as ``dir`` requires;
* a protected header that is a JSON object of at most ``MAX_HEADER`` characters with
  exactly ``alg: "dir"``, ``enc: "A256GCM"`` and a ``kid`` of 1-64 safe characters, and no
  other member but ``typ``/``cty`` (so no ``zip``: a decompression bomb is never inflated;
  no ``crit``: nothing we would have to understand);
* a token of at most ``max_size`` characters and a plaintext that is one JSON object.

``alg: none``, ``A128GCM``, a 10 kB ``kid``, a truncated token and one flipped byte anywhere
are all refused; the last two by AES-GCM's tag (the header is its additional data).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agent.envelope import check_unicode, dumps, parse_json
from agent.errors import MessageError

ALG = "dir"
ENC = "A256GCM"
ALGORITHMS = [ALG, ENC]  # joserfc's allow-list: key management and content encryption
KEY_BYTES = 32
MAX_KID = 64
MAX_HEADER = 512
DEFAULT_MAX_SIZE = 256 * 1024  # the envelope's own bound (agent.envelope.DEFAULT_MAX_SIZE)
CONTENT_TYPE = "application/jose"  # RFC 7515 section 9.2.1: the compact serialization
ENCODING = "jwe"  # the envelope's "encoding" when "message" is a JWE (MQTT, ntfy frames)
_KID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_COMPACT = re.compile(r"[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*){4}")  # five base64url parts
_HEADER_KEYS = frozenset({"alg", "enc", "kid", "typ", "cty"})
IV_BYTES = 12
TAG_BYTES = 16
_CANONICAL_LAST = ("", "AEIMQUYcgkosw048", "AQgw")  # by padding: 2 or 4 unused bits zero

if TYPE_CHECKING:
    from joserfc.jwk import OctKey

# joserfc (and cryptography under it) is imported at the first encrypt/decrypt, not with
# the agent: ~40 ms of a ~125 ms start, paid only by devices that see an encrypted message.


class DecryptError(MessageError):
    """A JWE that cannot be opened here: refused, no key for its kid, or tampered.

    ``kid`` is the token's key id when its header could be read (the key to ask for).
    """

    def __init__(self, text: str, kid: str | None = None) -> None:
        super().__init__(text, field="message")
        self.kid = kid


def encrypt(envelope: Mapping[str, Any], key: bytes, kid: str) -> str:
    """``envelope`` (a JSON-ready mapping) as a JWE compact string under ``key`` named ``kid``."""
    check_kid(kid)
    from joserfc import jwe

    header = {"alg": ALG, "enc": ENC, "kid": kid}
    return jwe.encrypt_compact(header, dumps(envelope).encode(), _oct(key), algorithms=ALGORITHMS)


def looks_like(text: str) -> bool:
    """Cheap shape test (no decoding): five dot-separated parts starting like a JSON header.

    Used to recognise an encrypted message whose server dropped ``encoding``/content type (a
    plain ntfy server keeps neither): a clear message never starts with ``eyJ`` and has
    exactly four dots by accident, and a false match is only shown as an encrypted message.
    """
    return text.startswith("eyJ") and text.count(".") == 4 and " " not in text


def header(token: str, *, max_size: int = DEFAULT_MAX_SIZE) -> dict[str, Any]:
    """The checked protected header of ``token`` (see the module docstring); DecryptError."""
    return _checked(token, max_size)[1]


def _checked(token: str, max_size: int) -> tuple[list[str], dict[str, Any]]:
    """The five segments of ``token`` and its checked header."""
    if len(token) > max_size:
        raise DecryptError(f"JWE is {len(token)} characters, above the limit of {max_size}")
    if not _COMPACT.fullmatch(token):
        raise DecryptError("not a JWE compact serialization (five base64url parts)")
    parts = token.split(".")
    if len(parts[0]) > MAX_HEADER:
        raise DecryptError(f"JWE header is longer than {MAX_HEADER} characters")
    obj = dict(_checked_header(parts[0]))
    if parts[1]:
        raise DecryptError("JWE with alg dir must have an empty encrypted key", obj["kid"])
    return parts, obj


# Every message sealed with one key carries the same header segment: its checks are done
# once (a hostile header is re-checked each time: errors are not cached). Measured 25 us of
# the ~180 us an encrypted message cost before (bench/mqtt_ingest.py --encrypted).
@functools.lru_cache(maxsize=64)
def _checked_header(segment: str) -> tuple[tuple[str, Any], ...]:
    try:
        obj = json.loads(_unb64(segment))
    except (ValueError, UnicodeDecodeError):
        raise DecryptError("JWE header is not JSON") from None
    if not isinstance(obj, dict):
        raise DecryptError("JWE header is not a JSON object")
    kid = obj.get("kid")
    if not isinstance(kid, str) or not _KID.fullmatch(kid):
        raise DecryptError(f"JWE kid must be 1-{MAX_KID} letters, digits or _.:- characters")
    if obj.get("alg") != ALG or obj.get("enc") != ENC:
        alg, enc = str(obj.get("alg"))[:20], str(obj.get("enc"))[:20]
        raise DecryptError(f"JWE alg {alg!r} / enc {enc!r} refused: only {ALG} + {ENC}", kid)
    if extra := set(obj) - _HEADER_KEYS:
        raise DecryptError(f"JWE header member {sorted(extra)[0][:20]!r} refused", kid)
    return tuple(obj.items())  # members are str/None checked above, or typ/cty values


@functools.lru_cache(maxsize=64)
def _kid_of(segment: str) -> str:
    """The kid of a checked header segment (``_checked_header``; errors are not cached)."""
    return str(dict(_checked_header(segment))["kid"])


def decrypt(
    token: str, keys: Mapping[str, bytes], *, max_size: int = DEFAULT_MAX_SIZE
) -> dict[str, Any]:
    """The envelope inside ``token``, opened with ``keys[kid]``; DecryptError otherwise."""
    return open_token(token, keys, max_size=max_size)[0]


def open_token(
    token: str, keys: Mapping[str, bytes], *, max_size: int = DEFAULT_MAX_SIZE
) -> tuple[dict[str, Any], str]:
    """``decrypt``, and the kid that opened it (the header is read once)."""
    if len(token) > max_size:
        raise DecryptError(f"JWE is {len(token)} characters, above the limit of {max_size}")
    if not _COMPACT.fullmatch(token):
        raise DecryptError("not a JWE compact serialization (five base64url parts)")
    head, encrypted_key, _, _, _ = token.split(".")
    if len(head) > MAX_HEADER:
        raise DecryptError(f"JWE header is longer than {MAX_HEADER} characters")
    kid = _kid_of(head)
    if encrypted_key:
        raise DecryptError("JWE with alg dir must have an empty encrypted key", kid)
    key = keys.get(kid)
    if key is None:
        raise DecryptError(f"no key {kid!r} for this topic", kid)
    aead, InvalidTag = _aead()
    try:
        # The three binary segments mapped to the standard alphabet in one pass (not one
        # per segment), each then checked canonical and decoded (``_strict_unb64``).
        _, _, iv64, ct64, tag64 = token.replace("-", "+").replace("_", "/").split(".")
        iv, ciphertext, tag = _strict_unb64(iv64), _strict_unb64(ct64), _strict_unb64(tag64)
        if len(iv) != IV_BYTES or len(tag) != TAG_BYTES:
            raise ValueError("A256GCM takes a 96-bit IV and a 128-bit tag")
        # RFC 7516 5.2 steps 14-15: the additional data is the header segment as it came
        plain = _cipher(key, aead).decrypt(iv, ciphertext + tag, head.encode("ascii"))
    except (InvalidTag, ValueError, binascii.Error):
        # AES-GCM's tag did not match (tampered, truncated or another key with this kid), or
        # a segment that does not decode: the same answer, nothing of the plaintext shown.
        raise DecryptError(
            f"JWE does not open with key {kid!r}: tampered or wrong key", kid
        ) from None
    try:
        text = plain.decode("utf-8")
        obj = parse_json(text, "message")
        check_unicode(text, obj, "message")
    except (ValueError, UnicodeDecodeError, MessageError):
        raise DecryptError("decrypted JWE is not a JSON envelope", kid) from None
    if type(obj) is not dict:
        raise DecryptError("decrypted JWE is not a JSON object", kid)
    return obj, kid


def check_kid(kid: str) -> str:
    """``kid`` if it is a key id we would accept in a header; ValueError otherwise."""
    if not _KID.fullmatch(kid):
        raise ValueError(f"key id must be 1-{MAX_KID} letters, digits or _.:- characters")
    return kid


@functools.cache
def _aead() -> tuple[Any, type[Exception]]:
    """``cryptography``'s AESGCM and its InvalidTag, imported on first use.

    Receiving, the content decryption (RFC 7516 section 5.2 steps 14-15 for ``dir`` +
    ``A256GCM``) is AESGCM itself -- the primitive under joserfc's ``A256GCM`` model --
    after ``_checked`` did everything else ``jwe.decrypt_compact`` would: the header
    checks (stricter than joserfc's), the empty encrypted key (``dir``: the key is the
    CEK), the segments' strict base64url, and here the IV and tag sizes. joserfc's wrapper
    cost 20-30 us a message (registry checks, a CompactEncryption and Recipient object, a
    JSON decode of a header whose checks are cached here, a new Cipher each time) against
    ~3 us for this (docs/PERFORMANCE.md, ``--encrypted``). tests/test_e2e_jwe checks both
    open, and refuse, the same tokens; encrypting stays joserfc's."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM, InvalidTag


@functools.lru_cache(maxsize=64)
def _cipher(key: bytes, aead: Any) -> Any:
    """The AESGCM object of ``key``, made once per key (in memory only, never logged)."""
    if len(key) != KEY_BYTES:
        raise ValueError(f"an A256GCM key is {KEY_BYTES} bytes, not {len(key)}")
    return aead(key)


def _strict_unb64(segment: str) -> bytes:
    """base64url without padding, as joserfc reads it: a last character that carries unused
    bits must have them zero (one token, one spelling). ``segment`` is already mapped to the
    standard alphabet (``-_`` to ``+/``, none of them a canonical last character) and its
    alphabet checked (``_COMPACT``)."""
    pad = -len(segment) % 4
    if pad == 3 or (pad and segment[-1] not in _CANONICAL_LAST[pad]):
        raise ValueError("not canonical base64url")
    # binascii directly: half of urlsafe_b64decode's 0.5 us a segment (its bytes round
    # trip and translate), three segments a message
    return binascii.a2b_base64(segment + "=" * pad)


@functools.lru_cache(maxsize=64)
def _oct(key: bytes) -> OctKey:
    """joserfc's key object for ``key``, made once per key (~18 us each time otherwise)."""
    from joserfc.jwk import OctKey

    if len(key) != KEY_BYTES:
        raise ValueError(f"an A256GCM key is {KEY_BYTES} bytes, not {len(key)}")
    return OctKey.import_key(key)


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
