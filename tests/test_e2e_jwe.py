"""The E2E wire format and sealing (agent.e2e.jwe / seal / keys): pure, no I/O.

Hostile tokens are built by hand (base64url JSON headers) or with joserfc directly, so what is
refused is refused by our checks or by AES-GCM, not by a shortcut in our own encrypt().
"""

from __future__ import annotations

import base64
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwe as rfc_jwe
from joserfc.jwk import OctKey

from agent.e2e import jwe, keys, seal
from agent.envelope import Message, from_fields

KEY = bytes(range(32))
KID = keys.kid_of(KEY)


def b64(obj: object) -> str:
    raw = json.dumps(obj).encode() if not isinstance(obj, bytes) else obj
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def token(envelope: dict[str, object] | None = None) -> str:
    return jwe.encrypt(envelope or {"message": "Door opened", "topic": "alerts"}, KEY, KID)


def with_header(tok: str, header: dict[str, object]) -> str:
    return ".".join([b64(header), *tok.split(".")[1:]])


def test_round_trip_and_header_is_dir_a256gcm_with_kid() -> None:
    tok = token({"message": "Door opened", "title": "Hall"})
    assert jwe.header(tok) == {"alg": "dir", "enc": "A256GCM", "kid": KID}
    assert tok.split(".")[1] == ""  # dir: no encrypted key
    assert jwe.decrypt(tok, {KID: KEY}) == {"message": "Door opened", "title": "Hall"}
    assert "Door" not in tok and "Hall" not in tok


def test_a_standard_library_publisher_interoperates() -> None:
    """A token made by joserfc directly (what a publisher in Python without edgepush does)."""
    hdr = {"alg": "dir", "enc": "A256GCM", "kid": KID}
    tok = rfc_jwe.encrypt_compact(hdr, b'{"message":"hi"}', OctKey.import_key(KEY))
    assert jwe.decrypt(tok, {KID: KEY}) == {"message": "hi"}


@pytest.mark.parametrize(
    ("header", "why"),
    [
        ({"alg": "none", "enc": "A256GCM", "kid": KID}, "refused"),
        ({"alg": "A256KW", "enc": "A256GCM", "kid": KID}, "refused"),
        ({"alg": "dir", "enc": "A128GCM", "kid": KID}, "refused"),
        ({"alg": "dir", "enc": "A256CBC-HS512", "kid": KID}, "refused"),
        ({"alg": "dir", "kid": KID}, "refused"),
        ({"alg": "dir", "enc": "A256GCM", "kid": KID, "zip": "DEF"}, "'zip' refused"),
        ({"alg": "dir", "enc": "A256GCM", "kid": KID, "crit": ["x"]}, "'crit' refused"),
        ({"alg": "dir", "enc": "A256GCM"}, "kid must be"),
        ({"alg": "dir", "enc": "A256GCM", "kid": "k" * 65}, "kid must be"),
        ({"alg": "dir", "enc": "A256GCM", "kid": "a b"}, "kid must be"),
        ({"alg": "dir", "enc": "A256GCM", "kid": 7}, "kid must be"),
    ],
)
def test_unexpected_headers_are_refused(header: dict[str, object], why: str) -> None:
    with pytest.raises(jwe.DecryptError, match=why):
        jwe.decrypt(with_header(token(), header), {KID: KEY})


def test_a_huge_kid_is_refused_before_any_json_is_read() -> None:
    tok = with_header(token(), {"alg": "dir", "enc": "A256GCM", "kid": "k" * 100_000})
    with pytest.raises(jwe.DecryptError, match="header is longer than 512"):
        jwe.decrypt(tok, {KID: KEY})


def test_a_huge_token_is_refused_by_size() -> None:
    with pytest.raises(jwe.DecryptError, match="above the limit"):
        jwe.decrypt(token() + "A" * 300_000, {KID: KEY})


def test_alg_none_with_an_empty_tag_is_refused() -> None:
    tok = f"{b64({'alg': 'none', 'enc': 'A256GCM', 'kid': KID})}..{b64(b'x')}.{b64(b'hi')}."
    with pytest.raises(jwe.DecryptError, match="refused"):
        jwe.decrypt(tok, {KID: KEY})


@pytest.mark.parametrize("part", [0, 2, 3, 4])
def test_one_changed_character_in_any_part_fails(part: int) -> None:
    parts = token().split(".")
    seg = parts[part]
    # change a middle character (the last one of a segment may carry only padding bits)
    i = len(seg) // 2
    parts[part] = seg[:i] + ("A" if seg[i] != "A" else "B") + seg[i + 1 :]
    with pytest.raises(jwe.DecryptError):
        jwe.decrypt(".".join(parts), {KID: KEY})


@pytest.mark.parametrize("cut", [1, 5, 22, 40])
def test_truncated_tokens_fail(cut: int) -> None:
    with pytest.raises(jwe.DecryptError):
        jwe.decrypt(token()[:-cut], {KID: KEY})


def test_wrong_key_and_missing_key() -> None:
    with pytest.raises(jwe.DecryptError, match="tampered or wrong key") as err:
        jwe.decrypt(token(), {KID: os.urandom(32)})
    assert err.value.kid == KID
    with pytest.raises(jwe.DecryptError, match="no key") as err:
        jwe.decrypt(token(), {})
    assert err.value.kid == KID


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_a_decrypt_error_never_another_exception(text: str) -> None:
    with pytest.raises(jwe.DecryptError):
        jwe.decrypt(text, {KID: KEY})


def msg(**fields: object) -> Message:
    return from_fields({"id": "m1", "time": 1_700_000_000, **fields}, topic="alerts")


def test_seal_keeps_only_routing_outside() -> None:
    m = msg(message="Door opened", title="Hall", tags=["door"], click="https://x.test/",
            priority=5, sequence_id="door1")  # fmt: skip
    outer = seal.seal(m, KEY, KID)
    assert set(outer) == {"id", "time", "topic", "sequence_id", "message", "encoding"}
    assert outer["encoding"] == "jwe"
    assert "Door" not in json.dumps(outer) and "Hall" not in json.dumps(outer)
    assert seal.seal(m, KEY, KID, expose_priority=True)["priority"] == 5
    back = seal.open_message(from_fields(outer, topic="alerts"), {KID: KEY})
    assert back.ciphertext is None and back.kid == KID
    assert back.message == m


def test_open_without_the_key_is_a_stand_in_with_the_ciphertext() -> None:
    outer = from_fields(seal.seal(msg(message="Door opened", title="Hall"), KEY, KID))
    got = seal.open_message(outer, {})
    assert got.message.message == "encrypted message on alerts"
    assert got.message.title is None and got.message.id == "m1"
    assert got.ciphertext == outer.message and got.kid == KID
    assert "no key" in (got.reason or "")


def test_a_tampered_message_never_shows_any_of_its_text() -> None:
    outer = seal.seal(msg(message="Door opened"), KEY, KID)
    parts = outer["message"].split(".")
    parts[3] = ("B" if parts[3][0] == "A" else "A") + parts[3][1:]
    outer["message"] = ".".join(parts)
    got = seal.open_message(from_fields(outer), {KID: KEY})
    assert got.message.message == "encrypted message on alerts"
    assert "tampered" in (got.reason or "")


def test_a_ciphertext_moved_to_another_topic_does_not_open() -> None:
    outer = seal.seal(msg(message="Door opened"), KEY, KID)
    got = seal.open_message(from_fields(outer, topic="other"), {KID: KEY})
    assert got.ciphertext is not None and "another topic" in (got.reason or "")


def test_outer_fields_cannot_add_to_the_inside() -> None:
    outer = seal.seal(msg(message="Door opened"), KEY, KID)
    outer.update(title="Injected", click="https://evil.test/")
    got = seal.open_message(from_fields(outer), {KID: KEY})
    assert got.message.title is None and got.message.click is None


def test_is_sealed() -> None:
    assert seal.is_sealed(from_fields(seal.seal(msg(message="x"), KEY, KID)))
    assert seal.is_sealed(msg(message=token()))  # a server that dropped "encoding"
    assert not seal.is_sealed(msg(message="eyJ but a sentence. with. four. dots."))
    assert not seal.is_sealed(msg(message="Door opened"))


def test_keys_export_parse_kid_and_passphrase() -> None:
    k = keys.new_key()
    assert len(k) == 32 and keys.new_key() != k
    text = keys.export(k)
    assert text.startswith("ek1.") and len(text) == 47
    assert keys.parse(text) == k and keys.parse(text[4:]) == k
    with pytest.raises(ValueError, match="not a key"):
        keys.parse("ek1.short")
    assert len(keys.kid_of(k)) == 16 and keys.kid_of(k) == keys.kid_of(bytes(k))
    # a publisher with only the passphrase derives the same key with the standard library
    import hashlib

    want = hashlib.pbkdf2_hmac("sha256", b"correct horse", b"edgepush-e2e:alerts", 600_000, 32)
    assert keys.from_passphrase("correct horse", "alerts") == want
    assert keys.from_passphrase("correct horse", "other") != want
    assert keys.ITERATIONS >= 600_000


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["message", "title", "priority", "tags", "click",
                                        "actions", "attachment", "topic", "id", "x"]),
                       _json, max_size=6))  # fmt: skip
def test_any_sealed_envelope_opens_or_is_a_stand_in_never_an_exception(
    inner: dict[str, object],
) -> None:
    """Whatever a key holder seals (a buggy publisher in another language), the agent gets a
    Message: the decrypted one, or the stand-in with the reason."""
    outer = msg(message=jwe.encrypt(inner, KEY, KID), encoding="jwe")
    got = seal.open_message(outer, {KID: KEY})
    assert got.message.id == "m1" and got.message.topic == "alerts"
    if got.ciphertext is not None:
        assert got.message.message == "encrypted message on alerts" and got.reason


def _joserfc_opens(tok: str, key: bytes) -> bytes | None:
    """joserfc's whole decrypt_compact, allowing only dir + A256GCM: the reference."""
    try:
        got = rfc_jwe.decrypt_compact(tok, OctKey.import_key(key), algorithms=["dir", "A256GCM"])
    except Exception:  # any refusal counts as "does not open"
        return None
    return got.plaintext


def _ours_opens(tok: str, key: bytes) -> bytes | None:
    try:
        return json.dumps(jwe.decrypt(tok, {KID: key}), separators=(",", ":")).encode()
    except jwe.DecryptError:
        return None


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 63)), max_size=3),
    st.integers(0, 30),
    st.booleans(),
)
def test_the_receive_path_opens_exactly_what_joserfc_opens(
    edits: list[tuple[int, int]], cut: int, other_key: bool
) -> None:
    """The agent decrypts with joserfc's A256GCM model after its own checks (agent.e2e.jwe
    ``_content_decryption``): whatever a changed character, a cut or another key does to a
    token, it opens exactly when joserfc's full decrypt_compact does, to the same text."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
    tok = jwe.encrypt({"message": "Door opened", "topic": "alerts"}, KEY, KID)
    for pos, ch in edits:
        i = pos % len(tok)
        tok = tok[:i] + alphabet[ch % len(alphabet)] + tok[i + 1 :]
    tok = tok[: len(tok) - cut] if cut else tok
    key = os.urandom(32) if other_key else KEY
    ref, ours = _joserfc_opens(tok, key), _ours_opens(tok, key)
    assert (ref is None) == (ours is None), (tok, ref, ours)
    if ref is not None and ours is not None:
        assert json.loads(ref) == json.loads(ours)


def test_a_non_canonical_last_character_is_refused_as_joserfc_does() -> None:
    """base64url's last character may carry unused bits; a token differing only there
    decodes to the same bytes, and both refuse it (joserfc's strict decoder). The tag:
    16 bytes, 22 characters, the last carrying 4 unused bits."""
    parts = token().split(".")
    part = 4
    seg = parts[part]
    canonical = "AEIMQUYcgkosw048"
    assert len(seg) == 22
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    i = last.index(seg[-1])
    odd = next(c for c in last[i + 1 :] + last[:i] if c not in canonical)
    parts[part] = seg[:-1] + odd
    tok = ".".join(parts)
    assert _joserfc_opens(tok, KEY) is None and _ours_opens(tok, KEY) is None
