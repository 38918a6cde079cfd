"""The envelope: decoding any payload into a Message, never a crash."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.envelope import Message, decode, dumps, encode, encode_bytes
from agent.errors import MessageError

json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
ids = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:", min_size=1, max_size=64
)
topics = st.text(st.characters(min_codepoint=32, blacklist_categories=("Cs",)), max_size=50).filter(
    lambda t: "\x7f" not in t
)
messages = st.builds(
    Message,
    id=ids,
    time=st.integers(0, 2**40),
    topic=topics,
    message=st.text(max_size=200),
    title=st.none() | st.text(max_size=50),
    priority=st.integers(1, 5),
    tags=st.lists(st.text(min_size=1, max_size=10), max_size=4).map(tuple),
    click=st.none() | st.text(max_size=30),
    actions=st.lists(
        st.fixed_dictionaries(
            {"action": st.sampled_from(["view", "http"]), "label": st.text(max_size=10)}
        ),
        max_size=2,
    ).map(tuple),
    attachment=st.none() | st.dictionaries(st.sampled_from(["name", "url"]), st.text(max_size=10)),
    content_type=st.none() | st.just("text/markdown"),
    expires=st.none() | st.integers(0, 2**40),
    extra=st.dictionaries(
        st.text(max_size=10).filter(
            lambda k: (
                k
                not in {
                    "id",
                    "time",
                    "expires",
                    "topic",
                    "title",
                    "message",
                    "priority",
                    "tags",
                    "click",
                    "actions",
                    "attachment",
                    "content_type",
                }
            )
        ),
        json_values,
        max_size=3,
    ),
)


@given(messages)
def test_decode_encode_roundtrip(msg: Message) -> None:
    assert decode(encode_bytes(msg)) == msg


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_raise_only_message_error(payload: bytes) -> None:
    try:
        msg = decode(payload, topic="t")
    except MessageError as exc:
        assert exc.field is not None
    else:
        assert msg.topic == "t"
        assert 1 <= msg.priority <= 5


def test_plain_text_is_the_message() -> None:
    msg = decode(b"backup done", topic="home/backup")
    assert (msg.message, msg.topic, msg.priority, len(msg.id)) == (
        "backup done",
        "home/backup",
        3,
        12,
    )


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"message": "x", "priority": "urgent"}', 5),
        (b'{"message": "x", "priority": "min"}', 1),
        (b'{"message": "x", "priority": 9}', 5),
        (b'{"message": "x", "priority": 0}', 1),
        (b'{"message": "x", "priority": "4"}', 4),
        (b'{"message": "x", "priority": "max"}', 5),
    ],
)
def test_priority_words_and_clamping(payload: bytes, expected: int) -> None:
    assert decode(payload).priority == expected


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b"\xff\xfe broken", "payload"),
        (b'{"message": "x", "priority": "loud"}', "priority"),
        (b'{"message": "x", "priority": true}', "priority"),
        (b'{"message": ["a"]}', "message"),
        (b'{"message": "x", "title": 5}', "title"),
        (b'{"message": "x", "tags": [1, 2]}', "tags"),
        (b'{"message": "x", "id": "../../etc/passwd"}', "id"),
        (b'{"message": "x", "id": "a\'; DROP TABLE messages;--"}', "id"),
        (b'{"message": "x", "time": "yesterday"}', "time"),
        (b'{"message": "x", "actions": "click"}', "actions"),
        (b'{"message": "x", "topic": "a\\u0000b"}', "topic"),
    ],
)
def test_bad_fields_are_named(payload: bytes, field: str) -> None:
    with pytest.raises(MessageError) as info:
        decode(payload)
    assert info.value.field == field
    assert field in str(info.value) or field == "payload"


def test_oversized_payload_is_rejected_with_its_size() -> None:
    with pytest.raises(MessageError, match="10485760 bytes, above the limit of 262144"):
        decode(b"x" * (10 * 1024 * 1024))


def test_malformed_json_falls_back_to_text() -> None:
    assert decode(b'{"message": "unterminated').message == '{"message": "unterminated'
    assert decode(b"[1, 2]").message == "[1, 2]"
    assert decode(b'{"temp": 21.5}').message == '{"temp": 21.5}'


def test_unknown_fields_are_kept() -> None:
    msg = decode(b'{"message": "x", "id": "abc", "time": 5, "color": "red", "n": [1]}')
    assert msg.extra == {"color": "red", "n": [1]}
    assert encode(msg)["color"] == "red"


def test_hostile_topics_are_only_values() -> None:
    for topic in ("../x", "a'; DROP TABLE messages;--", "$SYS/broker", "a%00b"):
        assert decode(b"hi", topic=topic).topic == topic


def test_ten_megabytes_pass_when_the_limit_allows_them() -> None:
    body = b"y" * (10 * 1024 * 1024)
    msg = decode(body, topic="big", max_size=16 * 1024 * 1024)
    assert len(msg.message) == len(body)
    with pytest.raises(MessageError, match="above the limit of 1024") as info:
        decode(body, max_size=1024)
    assert info.value.field == "payload"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b'{"message": "x", "id": "' + b"a" * 65 + b'"}', "id"),
        (b'{"message": "x", "id": ""}', "id"),
        (b'{"message": "x", "id": 42}', "id"),
        (b'{"message": "x", "topic": "' + b"t" * 257 + b'"}', "topic"),
        (b'{"message": "x", "topic": 7}', "topic"),
        (b'{"message": "x", "time": -1}', "time"),
        (b'{"message": "x", "expires": 1e300}', "expires"),
        (b'{"message": "x", "priority": 2.5}', "priority"),
        (b'{"message": "x", "priority": null, "click": 3}', "click"),
        (b'{"message": "x", "attachment": "file.txt"}', "attachment"),
        (b'{"message": "x", "actions": [{"action": "view"}]}', "actions"),
        (b'{"message": "x", "content_type": ["text/plain"]}', "content_type"),
    ],
)
def test_more_bad_fields_are_named(payload: bytes, field: str) -> None:
    with pytest.raises(MessageError) as info:
        decode(payload)
    assert info.value.field == field


@pytest.mark.parametrize(
    "payload",
    [
        b'{"message": "x", "priority": NaN}',
        b'{"message": "x", "time": Infinity}',
        b"[" * 100_000 + b"]" * 100_000,
        b"{" * 50_000,
        b'{"message": "x",}',
        b"",
        b"   ",
        b"\x00\x01\x02",
    ],
)
def test_not_quite_json_is_plain_text(payload: bytes) -> None:
    assert decode(payload, topic="t").message == payload.decode()


def test_sql_and_path_characters_in_envelope_topics_are_kept_verbatim() -> None:
    for topic in ("../../etc/passwd", "x'); DELETE FROM messages;--", "a/%/_/*/#/+", "ü/😀"):
        body = ('{"message": "hi", "topic": ' + dumps(topic) + "}").encode()
        assert decode(body).topic == topic


def test_priority_words_are_case_and_space_insensitive() -> None:
    assert decode(b'{"message": "x", "priority": " High "}').priority == 4
    assert decode(b'{"message": "x", "priority": "DEFAULT"}').priority == 3
    assert decode(b'{"message": "x", "priority": 5.0}').priority == 5


def test_unpaired_surrogate_escape_is_rejected_and_a_paired_one_kept() -> None:
    # json.loads accepts "\ud800", but the result is not Unicode text and would fail far away
    # (SQLite, D-Bus) if it got through; a paired escape is one real character.
    for payload in (b'{"message": "a\\ud800b"}', b'{"message": "x", "extra": ["\\uDFFF"]}'):
        with pytest.raises(MessageError, match="surrogate") as info:
            decode(payload)
        assert info.value.field == "payload"
    assert decode(b'{"message": "smile \\ud83d\\ude00"}').message == "smile \U0001f600"
