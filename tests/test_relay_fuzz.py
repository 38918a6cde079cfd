"""Hypothesis fuzz of the relay's HTTP API: any path, headers and body → never a 5xx, never a
crash, always JSON on errors; the relay is checked alive after every example."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import json_text
from tests.relay import Relay


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    r = Relay(tmp_path_factory.mktemp("fuzz")).start()
    try:
        yield r
    finally:
        assert r.stop() == 0, r.log.read_text()
        assert "Traceback" not in r.log.read_text(), r.log.read_text()


_segment = st.one_of(
    st.sampled_from(["v1", "health", "receipts", "stats", "messages", "json", "sse", "ws",
                     "metrics", "t1", "t1,t2", "..", ".", "%00", "%2F", "a%ffb", ""]),
    st.text(max_size=20),
)  # fmt: skip
_query = st.dictionaries(
    st.sampled_from(["since", "poll", "priority", "tags", "auth", "title", "cache", "x"]),
    st.one_of(st.text(max_size=20), st.sampled_from(["1", "all", "latest", "10m", "high"])),
    max_size=3,
)
_header_names = st.sampled_from(
    [
        "Title",
        "X-Title",
        "Priority",
        "X-Priority",
        "Tags",
        "Click",
        "Actions",
        "Cache",
        "Message",
        "Authorization",
        "Content-Length-X",
    ]
)
_header_value = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"),
    max_size=40,
)
_body = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b'{"topic":"t1","message":"m"}', b'{"topic":"t1","priority":"x"}',
                     b'[{"id":"a","state":"clicked"}]', b"\xff" * 10]),
    st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(
        st.sampled_from(["topic", "message", "title", "priority", "tags", "actions", "id"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=10), st.lists(st.text(max_size=5))),
    )),
    # JSON *text*: 1e400, 30-digit ints, NaN literals, lone surrogate escapes, NUL, nesting up
    # to 5000 deep, in known and unknown fields (json.dumps cannot write most of these)
    json_text.envelopes.map(lambda t: t.replace('{"message"', '{"topic":"t1","message"', 1)
                            .encode()),
    json_text.values.map(str.encode),
)  # fmt: skip


def _send(relay: Relay, method: str, path: str, headers: dict[str, str], body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=15)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v.encode("latin-1"))
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        if method == "HEAD":
            return resp.status
        # Streams answer 200 and stay open: the status line is all we need from them.
        data = resp.read() if resp.status != 200 or "poll" in path else b""
        if 400 <= resp.status < 500 and method != "HEAD":
            assert json.loads(data).get("error"), data
        return resp.status
    finally:
        conn.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD"]),
    segments=st.lists(_segment, min_size=1, max_size=4),
    query=_query,
    headers=st.dictionaries(_header_names, _header_value, max_size=4),
    body=_body,
)
def test_fuzz_http_api_never_5xx(
    relay: Relay, method: str, segments: list[str], query: dict[str, str],
    headers: dict[str, str], body: bytes,
) -> None:  # fmt: skip
    path = "/" + "/".join(urllib.parse.quote(s, safe="%,") for s in segments)
    if query and method == "GET":
        query["poll"] = "1"  # never hang on a live stream
    if method == "GET" and segments[-1] in ("json", "sse", "ws"):
        query["poll"] = "1"
    if query:
        path += "?" + urllib.parse.urlencode(query)
    status = _send(relay, method, path, headers, body if method != "GET" else b"")
    assert status < 500, (method, path, headers, body)
    assert relay.request("GET", "/v1/health")[0] == 200
