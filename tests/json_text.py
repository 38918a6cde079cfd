"""Hypothesis strategies that generate JSON *text*, hostile parts included.

Python values cannot express what breaks a JSON boundary: ``1e400`` (valid grammar that reads
as infinity), an integer of 30 digits, a ``\\ud800`` escape (a lone surrogate), nesting
thousands deep, ``NaN`` literals, escaped NUL. These strategies write the text itself, so the
envelope, the ntfy frame parser and the real MQTT/WebSocket/relay paths see what an attacker
(or a broken publisher) would send.
"""

from __future__ import annotations

import json

from hypothesis import strategies as st

FIELDS = (
    "id", "time", "expires", "topic", "title", "message", "priority", "tags", "click",
    "actions", "attachment", "content_type",
)  # fmt: skip

numbers = st.one_of(
    st.sampled_from(["1e400", "-1e400", "-1e999", "1E+309", "2e-400", "0.5", "-0", "1.0e308"]),
    st.integers(-(2**70), 2**70).map(str),
    st.integers(19, 400).map(lambda n: "9" * n),
    st.integers(300, 999).map(lambda e: f"1e{e}"),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)
constants = st.sampled_from(["NaN", "Infinity", "-Infinity", "true", "false", "null"])
strings = st.one_of(
    st.text(max_size=20).map(lambda t: json.dumps(t, ensure_ascii=False)),
    st.sampled_from(['"\\ud800"', '"a\\udfffb"', '"\\u0000"', '"x\\u0000y"', '"\\ud83d\\ude00"',
                     '"\\ud83d"', '"\\u001f"', '"\\"\\\\"']),
)  # fmt: skip
scalars = st.one_of(numbers, constants, strings)


def _nested(depth: int, inner: str) -> str:
    return "[" * depth + inner + "]" * depth


deep = st.builds(_nested, st.integers(1, 5000), scalars)


def _obj(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in pairs) + "}"


values = st.recursive(
    st.one_of(scalars, deep),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda xs: "[" + ",".join(xs) + "]"),
        st.lists(st.tuples(st.text(max_size=6), inner), max_size=3).map(_obj),
    ),
    max_leaves=6,
)
keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=8))
envelopes = st.lists(st.tuples(keys, values), min_size=1, max_size=4).map(
    lambda pairs: _obj([("message", '"hostile"'), *pairs])
)
"""A JSON object with envelope fields (and unknown ones) whose values may be anything above."""
