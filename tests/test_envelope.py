"""The envelope: decoding any payload into a Message, never a crash."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.envelope import (
    FIELDS,
    MAX_DEPTH,
    Message,
    decode,
    dumps,
    encode,
    encode_bytes,
    from_fields,
)
from agent.errors import MessageError
from agent.ntfy import parse_frame
from tests import json_text

# Python values an envelope may carry back out: finite floats, 64-bit ints, any Unicode text
# without lone surrogates (those are refused at decode, see the JSON-text tests below).
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=20,
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


# --- JSON text a publisher can send that Python values cannot express ---------------------


def _round_trips(msg: Message) -> None:
    again = decode(encode_bytes(msg))
    assert again == msg, (again, msg)


@settings(max_examples=400)
@given(json_text.envelopes)
def test_any_json_text_decodes_to_a_round_tripping_message_or_message_error(text: str) -> None:
    try:
        msg = decode(text.encode("utf-8", "surrogatepass"), topic="t")
    except MessageError as exc:
        assert exc.field is not None
        return
    _round_trips(msg)


@settings(max_examples=200)
@given(json_text.values)
def test_any_json_value_text_decodes_or_raises_message_error(text: str) -> None:
    for payload in (text, '{"message": "m", "x": ' + text + "}"):
        try:
            msg = decode(payload.encode(), topic="t")
        except MessageError:
            continue
        _round_trips(msg)


def _with(name: str, value_text: str) -> str:
    """An envelope's JSON text with ``name`` set to the raw JSON text ``value_text``."""
    return '{"message": "m", ' + dumps(name) + ": " + value_text + "}"


_HOSTILE_FIELDS = (*FIELDS, "color")  # "color": an unknown field, kept in extra


@pytest.mark.parametrize("number", ["1e400", "-1e400", "-1e999", "123456789012345678901234"])
@pytest.mark.parametrize("name", _HOSTILE_FIELDS)
def test_unrepresentable_number_in_any_field_is_a_message_error_naming_it(
    name: str, number: str
) -> None:
    payload = _with(name, number)
    with pytest.raises(MessageError, match=number[:12]) as info:
        decode(payload.encode())
    assert info.value.field == name
    nested = _with(name, '[{"a": {"b": ' + number + "}}]")
    with pytest.raises(MessageError) as info:
        decode(nested.encode())
    assert info.value.field == name


@pytest.mark.parametrize("name", ["actions", "attachment", "color"])
def test_an_unrepresentable_number_inside_an_action_or_attachment_is_refused(name: str) -> None:
    value = {
        "actions": '[{"action": "view", "label": "x", "n": 1e400}]',
        "attachment": '{"name": "f", "size": 1e400}',
        "color": '{"deep": [1e400]}',
    }[name]
    with pytest.raises(MessageError, match="1e400") as info:
        decode(_with(name, value).encode())
    assert info.value.field == name


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("name", _HOSTILE_FIELDS)
def test_nan_literals_make_the_payload_plain_text(name: str, literal: str) -> None:
    # NaN/Infinity are not JSON: the payload is not an envelope but a message text, stored.
    payload = _with(name, literal)
    msg = decode(payload.encode(), topic="t")
    assert msg.message == payload and msg.extra == {}
    _round_trips(msg)


def test_the_largest_64_bit_ints_are_kept_exactly() -> None:
    msg = decode(b'{"message": "m", "n": [9223372036854775807, -9223372036854775808]}')
    assert msg.extra == {"n": [2**63 - 1, -(2**63)]}
    _round_trips(msg)
    with pytest.raises(MessageError, match="beyond 64 bits"):
        decode(b'{"message": "m", "n": 9223372036854775808}')


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 500, 5000])
def test_deep_nesting_is_plain_text_and_round_trips(depth: int) -> None:
    payload = '{"message": "m", "x": ' + "[" * depth + "]" * depth + "}"
    msg = decode(payload.encode(), topic="t")
    assert msg.message == payload
    _round_trips(msg)
    kept = '{"message": "m", "x": ' + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "}"
    assert decode(kept.encode()).extra != {}


def test_escaped_nul_is_kept_in_text_and_round_trips() -> None:
    msg = decode(b'{"message": "a\\u0000b", "title": "\\u0000", "z": "\\u0000"}')
    assert (msg.message, msg.title, msg.extra) == ("a\x00b", "\x00", {"z": "\x00"})
    _round_trips(msg)


def test_a_str_payload_with_a_lone_surrogate_is_a_message_error() -> None:
    with pytest.raises(MessageError, match="surrogate") as info:
        decode("text \ud800 here")
    assert info.value.field == "payload"


@pytest.mark.parametrize("name", ["actions", "attachment", "color", "message"])
def test_from_fields_refuses_values_another_decoder_let_through(name: str) -> None:
    from agent.envelope import from_fields

    bad = {"actions": [{"action": "v", "label": "l", "n": float("inf")}],
           "attachment": {"size": float("nan")}, "color": [float("-inf")],
           "message": float("inf")}[name]  # fmt: skip
    with pytest.raises(MessageError) as info:
        from_fields({"message": "m", name: bad} if name != "message" else {name: bad})
    assert info.value.field == ("extra" if name == "color" else name)


@pytest.mark.parametrize("number", ["1e400", "-1e400", "99999999999999999999999"])
@pytest.mark.parametrize("name", _HOSTILE_FIELDS)
def test_ntfy_frame_with_an_unrepresentable_number_is_rejected_with_its_id(
    name: str, number: str
) -> None:
    if name == "id":
        frame = '{"event": "message", "message": "m", "id": ' + number + "}"
    else:
        frame = '{"event": "message", "id": "m7", ' + _with(name, number)[1:]
    ev = parse_frame(frame, max_size=1 << 20)
    assert ev.kind == "rejected", ev
    assert ev.id == (None if name == "id" else "m7")
    assert ev.reason is not None and name in ev.reason


# Past Python's recursion limit even the lenient re-parse cannot read the id: rejected, unnamed.
@pytest.mark.parametrize(("depth", "named"), [(MAX_DEPTH + 1, "m8"), (5000, None)])
def test_ntfy_frame_nested_too_deep_is_rejected_not_a_broken_stream(
    depth: int, named: str | None
) -> None:
    frame = '{"event": "message", "id": "m8", "x": ' + "[" * depth + "]" * depth + "}"
    ev = parse_frame(frame, max_size=1 << 20)
    assert (ev.kind, ev.id) == ("rejected", named)


@settings(max_examples=300)
@given(json_text.envelopes)
def test_any_ntfy_frame_text_is_a_message_that_round_trips_or_rejected_or_broken(
    text: str,
) -> None:
    from agent.errors import ConnectionLost

    frame = '{"event": "message",' + text[1:]
    try:
        ev = parse_frame(frame, max_size=1 << 20)
    except ConnectionLost:
        return
    assert ev.kind in ("message", "rejected"), ev
    if ev.message is not None:
        _round_trips(ev.message)


@pytest.mark.parametrize(
    "extra",
    [
        {"x": float("inf")},
        {"x": "\ud800"},
        {"\ud800": "x"},
        {"x": {"y": float("nan")}},
        {("t",): 1},
    ],
)
def test_extras_json_cannot_write_back_are_refused(extra: dict[object, object]) -> None:
    """A mapping from another decoder: whatever JSON cannot write back is a MessageError
    (the plain ASCII extras of an encrypted message skip the dump that finds these)."""
    with pytest.raises(MessageError, match="extra cannot be written back as JSON"):
        from_fields({"message": "m", **extra}, topic="t")  # type: ignore[dict-item]


def test_plain_extras_are_kept_as_they_are() -> None:
    got = from_fields({"message": "m", "encoding": "jwe", "n": 3}, topic="t")
    assert got.extra == {"encoding": "jwe", "n": 3}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"id": "a b", "topic": "t"}, "id"),
        ({"id": "x" * 65, "topic": "t"}, "id"),
        ({"topic": "a\x01b"}, "topic"),
        ({"topic": 5}, "topic"),
        ({"topic": "t", "priority": True}, "priority"),
        ({"topic": "t", "time": True}, "time"),
        ({"topic": "t", "time": -1}, "time"),
        ({"topic": "t", "title": 3}, "title"),
        ({"topic": "t", "tags": ["a", 1]}, "tags"),
    ],
)
def test_from_fields_fast_paths_refuse_what_the_checks_refuse(
    fields: dict[str, object], field: str
) -> None:
    # from_fields checks common values inline (issue 14's replay cost) and hands anything
    # else to the full check: the same refusals either way
    with pytest.raises(MessageError) as err:
        from_fields(fields)
    assert err.value.field == field


def test_from_fields_fast_paths_keep_what_the_checks_keep() -> None:
    m = from_fields({"id": "ab-c.d", "topic": "caf\u00e9\u00a0x", "time": 5.0, "priority": 9,
                     "tags": "a, b", "expires": 7})  # fmt: skip
    assert (m.id, m.topic, m.time, m.priority, m.tags) == ("ab-c.d", "caf\u00e9\u00a0x", 5, 5,
                                                           ("a", "b"))  # fmt: skip
    assert m.expires == 7  # a rare field on a short message is kept
    plain = from_fields({"id": "abc", "topic": "t", "time": 1, "priority": 2, "tags": ["x"]})
    assert plain == Message(id="abc", time=1, topic="t", priority=2, tags=("x",))
    assert plain.extra == {}
