"""A sealed MQTT message opened from its parsed outside (agent.e2e.seal.arrival / Arrived),
the agent's receive path: it must decide, open and refuse exactly as decoding the outside
into a Message and opening that (seal.decrypted / open_message) does. Pure but for the key
file the Decryptor reads and one SQLite store."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import config
from agent.e2e import jwe, keys, seal
from agent.e2e.keystore import KeyStore
from agent.e2e.receive import Decryptor
from agent.envelope import Message, decode, from_fields
from agent.errors import MessageError
from agent.store import Store

KEY = bytes(range(32))
KID = keys.kid_of(KEY)
SIZE = 256 * 1024

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
_outside_value = st.one_of(
    _json,
    st.sampled_from(["m1", "a-b", "", "x" * 65, "jwe", "JWE", 0, -1, 2**53, 1_700_000_000]),
    st.just(jwe.encrypt({"message": "Door opened", "topic": "alerts"}, KEY, KID)),
)
_topics = st.sampled_from(["alerts", "a/b c", "bad\x00topic", "x" * 257, "nb\u00a0sp", ""])


def _outcome(fn: Any, *args: Any, **kw: Any) -> Any:
    try:
        return fn(*args, **kw)
    except MessageError as exc:
        return ("refused", str(exc), exc.field)


def _same_made_up(got: Message, ref: Message, obj: object) -> tuple[Message, Message]:
    """An id or time the payload lacks is made up at decode (random id, now)."""
    has = obj if isinstance(obj, dict) else {}
    if has.get("id") is None:
        got, ref = replace(got, id="made-up"), replace(ref, id="made-up")
    if has.get("time") is None:
        got, ref = replace(got, time=0), replace(ref, time=0)
    return got, ref


@settings(max_examples=500, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["id", "time", "topic", "message", "encoding", "expires", "priority",
                         "title", "sequence_id", "x"]),
        _outside_value, max_size=7,
    ),
    _topics,
    st.booleans(),
)  # fmt: skip
def test_arrival_is_what_decode_gives(obj: dict[str, Any], topic: str, wrap: bool) -> None:
    """Refused with the same error, the same Message, or an Arrived whose ``outside()`` is
    the Message decode makes (so the stand-in and stored ciphertext are unchanged)."""
    if wrap:
        obj = {"id": "m1", "time": 1_700_000_000, **obj, "encoding": "jwe"}
    payload = json.dumps(obj).encode()
    ref = _outcome(decode, payload, topic=topic, max_size=SIZE)
    got = _outcome(seal.arrival, payload, topic=topic, max_size=SIZE)
    if isinstance(ref, tuple):
        assert got == ref
        return
    if isinstance(got, seal.Arrived):
        assert obj.get("encoding") == "jwe" and set(obj) <= {"id", "time", "topic", "message",
                                                             "encoding"}  # fmt: skip
        got = got.outside()
    assert isinstance(got, Message)
    assert _same_made_up(got, ref, obj)[0] == _same_made_up(got, ref, obj)[1]


def test_what_a_sealer_writes_arrives_unopened_and_the_rest_decoded() -> None:
    inner = from_fields({"id": "m1", "time": 1_700_000_000, "message": "hi"}, topic="alerts")
    outer = seal.seal(inner, KEY, KID)
    got = seal.arrival(json.dumps(outer).encode(), topic="alerts", max_size=SIZE)
    assert got == seal.Arrived("m1", 1_700_000_000, "alerts", outer["message"])
    for other in ({**outer, "sequence_id": "s1"}, {**outer, "priority": 5},
                  {**outer, "expires": 1_800_000_000}, {**outer, "id": "a.b"}):  # fmt: skip
        assert isinstance(seal.arrival(json.dumps(other), topic="alerts", max_size=SIZE), Message)
    assert isinstance(seal.arrival("Door opened", topic="alerts", max_size=SIZE), Message)


_inner = st.dictionaries(
    st.sampled_from(["message", "title", "priority", "tags", "click", "actions", "attachment",
                     "topic", "id", "time", "sequence_id", "x"]),
    _json, max_size=6,
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    _inner,
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 63)), max_size=2),
    st.sampled_from(["right", "none", "other"]),
)
def test_an_arrived_message_opens_exactly_as_its_decoded_one(
    inner: dict[str, Any], edits: list[tuple[int, int]], key: str
) -> None:
    """Whatever a key holder sealed, changed characters, no key or another key: the same
    Message, or the same refusal (the stand-in and reason built from it are then equal)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
    tok = jwe.encrypt(inner, KEY, KID)
    for pos, ch in edits:
        i = pos % len(tok)
        tok = tok[:i] + alphabet[ch % len(alphabet)] + tok[i + 1 :]
    keyset = {"right": {KID: KEY}, "none": {}, "other": {KID: bytes(32)}}[key]
    payload = json.dumps({"id": "m1", "time": 1_700_000_000, "topic": "alerts",
                          "message": tok, "encoding": "jwe"})  # fmt: skip
    arrived = seal.arrival(payload, topic="alerts", max_size=SIZE)
    assert isinstance(arrived, seal.Arrived)
    ref = _outcome(lambda: seal.decrypted(decode(payload, topic="alerts"), keyset)[0])
    assert _outcome(seal.decrypted_arrival, arrived, keyset) == ref
    assert seal.open_message(arrived.outside(), keyset) == seal.open_message(
        decode(payload, topic="alerts"), keyset
    )


@pytest.fixture
def decryptor(tmp_path: Path) -> Decryptor:
    cfg = config.load({"servers": ["mqtt://127.0.0.1:1"], "topics": ["alerts"],
                       "notifier": "none"}, env={"PUSHAGENT_HOME": str(tmp_path)})  # fmt: skip
    KeyStore(cfg).add("alerts", KEY)
    d = Decryptor(cfg)
    d.load()
    return d


def test_a_batch_of_arrivals_opens_stores_and_refuses_as_decoded_messages(
    decryptor: Decryptor, tmp_path: Path
) -> None:
    """One batch: a clear message, sealed ones that open, one tampered, one under an unknown
    kid, one with a routing extra (decoded, not Arrived), one whose id also came in clear.
    Opened alike, marked alike; the store shows the tampered one only as its stand-in and
    never merges the clear and the sealed message of one id."""

    def sealed(mid: str, text: str, key: bytes = KEY, **outside: Any) -> bytes:
        m = from_fields({"id": mid, "time": 1_700_000_000, "message": text}, topic="alerts")
        outer = {**seal.seal(m, key, keys.kid_of(key)), **outside}
        return json.dumps(outer).encode()

    bad = json.loads(sealed("t1", "secret text"))
    bad["message"] = bad["message"][:-3] + ("AAA" if bad["message"][-3:] != "AAA" else "BBB")
    payloads = [
        b'{"id": "c1", "message": "clear"}',
        sealed("e1", "first"),
        json.dumps(bad).encode(),
        sealed("u1", "unknown key", key=bytes(32)),
        sealed("s1", "with a sequence id", sequence_id="seq1"),
        sealed("c1", "same id as the clear one"),
        sealed("e2", "second"),
    ]
    arrived = [seal.arrival(p, topic="alerts", max_size=SIZE) for p in payloads]
    assert [isinstance(a, seal.Arrived) for a in arrived] == [0, 1, 1, 1, 0, 1, 1]
    decoded = [decode(p, topic="alerts") for p in payloads]
    got, marks = decryptor.open_batch(arrived)
    ref, ref_marks = decryptor.open_batch(decoded)
    assert list(got) == list(ref) and marks == ref_marks and marks is not None
    assert [m.message for m in got] == ["clear", "first", "encrypted message on alerts",
                                        "encrypted message on alerts", "with a sequence id",
                                        "same id as the clear one", "second"]  # fmt: skip
    with Store(tmp_path / "a.db") as store:
        fresh = store.insert_batch(got, encrypted=marks)
        assert [(s.message.id, s.state) for s in fresh] == [
            ("c1", "received"), ("e1", "received"), ("t1", "undecryptable"),
            ("u1", "undecryptable"), ("s1", "received"), ("e2", "received"),
        ]  # fmt: skip
        assert "secret" not in json.dumps([s.message.message for s in fresh])
        assert store.e2e_of("c1") == (None, None)  # the clear one; the sealed c1 not merged
        assert store.e2e_of("t1") == ("jwe", bad["message"])


def test_a_missing_key_is_logged_with_the_import_command(
    decryptor: Decryptor, caplog: pytest.LogCaptureFixture
) -> None:
    """A new device's log said only "undecryptable: no key 'KID' for this topic": the line
    for a kid this device lacks names the command that fixes it; a tampered message under a
    key it has does not (importing would not help)."""
    other = bytes(32)
    unknown = from_fields({"id": "u1", "time": 1_700_000_000, "message": "x"}, topic="alerts")
    tampered = from_fields({"id": "t1", "time": 1_700_000_000, "message": "y"}, topic="alerts")
    token = seal.seal(tampered, KEY, KID)["message"]
    payloads = [
        json.dumps(seal.seal(unknown, other, keys.kid_of(other))).encode(),
        json.dumps({"id": "t1", "message": token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB"),
                    "encoding": "jwe"}).encode(),
    ]  # fmt: skip
    with caplog.at_level("INFO", logger="pushagent.e2e"):
        decryptor.open_batch([seal.arrival(p, topic="alerts", max_size=SIZE) for p in payloads])
    lines = {r.getMessage().split()[1]: r.getMessage() for r in caplog.records}
    assert "pushagent key import alerts STRING" in lines["u1"], lines
    assert keys.kid_of(other) in lines["u1"]
    assert "key import" not in lines["t1"], lines
