"""The format of encrypted attachments (agent.e2e.files), checked against ``cryptography``'s
AES-GCM used directly, as a publisher in another language would (docs/E2E.md)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent.e2e import files


def test_the_layout_is_nonce_then_aes_gcm_with_the_key_in_base64url() -> None:
    data = os.urandom(1000)
    blob, secret = files.seal_file(data)
    assert secret["enc"] == "A256GCM" and len(blob) == len(data) + files.OVERHEAD
    key = base64.urlsafe_b64decode(secret["key"] + "=")
    assert AESGCM(key).decrypt(blob[:12], blob[12:], None) == data
    # ... and what another publisher makes that way opens here
    nonce = os.urandom(12)
    theirs = nonce + AESGCM(key).encrypt(nonce, b"from elsewhere", None)
    assert files.open_file(secret, theirs) == b"from elsewhere"
    assert files.seal_file(data)[1]["key"] != secret["key"]  # a fresh key per file


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda b, s: (b[:-1] + bytes([b[-1] ^ 1]), s), "tampered or truncated"),
        (lambda b, s: (b[:-3], s), "tampered or truncated"),
        (lambda b, s: (b[:5], s), "too short"),
        (lambda b, s: (b, {**s, "enc": "A128GCM"}), "enc 'A128GCM' refused"),
        (lambda b, s: (b, {**s, "key": "x" * 10}), "not 43 base64url"),
        (lambda b, s: (b, {"enc": "A256GCM"}), "not 43 base64url"),
        (lambda b, s: (b, {**s, "key": "A" * 42 + "="}), "key"),
        (
            lambda b, s: (b, {**s, "key": base64.urlsafe_b64encode(os.urandom(32)).decode()[:43]}),
            "tampered",
        ),
    ],
)
def test_what_does_not_open_is_one_clear_error(change: object, why: str) -> None:
    blob, secret = files.seal_file(b"hello file")
    bad_blob, bad_att = change(blob, secret)  # type: ignore[operator]
    with pytest.raises(files.FileDecryptError, match=why):
        files.open_file(bad_att, bad_blob)


def test_open_download_replaces_the_ciphertext_with_a_0600_plaintext(tmp_path: Path) -> None:
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(600)
    blob, secret = files.seal_file(data)
    tmp = tmp_path / ".tmp-x"
    tmp.write_bytes(blob)
    assert files.open_download(secret, tmp, 16) == (len(data), data[:16])
    assert tmp.read_bytes() == data and (tmp.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [".tmp-x"]


def test_the_servers_location_fills_in_only_for_an_encrypted_file() -> None:
    outer = {"name": "attachment.bin", "url": "http://r/file/x.bin", "expires": 9, "size": 1}
    inner = {"name": "door.png", "type": "image/png", "size": 3, "enc": "A256GCM", "key": "k"}
    assert files.located(inner, outer) == {**inner, "url": "http://r/file/x.bin", "expires": 9}
    own = {**inner, "url": "https://cdn/x"}
    assert files.located(own, outer) == own
    clear = {"name": "a.txt", "url": "https://elsewhere/a.txt"}
    assert files.located(clear, outer) == clear and files.located(inner, None) == inner
