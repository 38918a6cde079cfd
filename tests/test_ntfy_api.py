"""ntfy's endpoints and subscribe features beyond publish/json/sse/ws, against a real relay.

Expectations come from ntfy's server (``server/server.go``, ``types.go``, ``errors.go``),
not from this relay's earlier behaviour: the ``/raw`` stream, the ``id``/``message``/``title``
filters with their header forms and aliases, ``since=none``, publishing by GET, ``PUT /``,
``/<topics>/auth``, ``/v1/account``, ``/v1/stats``, UnifiedPush discovery, CORS and error
codes.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import child_env
from tests.relay import Relay, module_relay, unique_topic


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    yield from module_relay(tmp_path_factory, "ntfyapi")


def topic() -> str:
    return unique_topic("n")


def q(**params: str) -> str:
    return urllib.parse.urlencode(params)


def ids(messages: list[dict[str, Any]]) -> list[str]:
    return [m["id"] for m in messages]


# --- /raw -----------------------------------------------------------------------------------


async def test_raw_stream_is_message_text_one_per_line_keepalives_empty(relay: Relay) -> None:
    t = topic()
    old = relay.publish(t, "stored\nbefore")
    async with aiohttp.ClientSession() as s, s.get(f"{relay.url}/{t}/raw?since=all") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
        async with asyncio.timeout(15):
            assert await resp.content.readline() == b"\n"  # open: an empty line
            # the replay: newlines inside a message become spaces (one message, one line)
            assert await resp.content.readline() == b"stored before\n"
            await asyncio.to_thread(relay.publish, t, "live one", Title="ignored in raw")
            line = await resp.content.readline()
            while line == b"\n":  # keepalives (0.5 s in this relay) may come first
                line = await resp.content.readline()
            assert line == b"live one\n"
            assert await resp.content.readline() == b"\n"  # the next keepalive
    assert old["message"] == "stored\nbefore"


def test_raw_poll_returns_the_cached_texts_and_closes(relay: Relay) -> None:
    t = topic()
    relay.publish(t, "a")
    relay.publish(t, "b")
    status, body = relay.request("GET", f"/{t}/raw?poll=1")
    assert status == 200 and body == "a\nb\n"


# --- filters --------------------------------------------------------------------------------


def test_id_title_message_filters_match_exactly(relay: Relay) -> None:
    t = topic()
    a = relay.publish(t, "Disk full", Title="NAS")
    b = relay.publish(t, "disk full", Title="nas")
    c = relay.publish(t, "Disk full on backup", Title="NAS backup")
    assert ids(relay.poll(t, q(id=b["id"]))) == [b["id"]]
    assert ids(relay.poll(t, q(title="NAS"))) == [a["id"]]  # exact: not "nas", not a prefix
    assert ids(relay.poll(t, q(message="Disk full"))) == [a["id"]]
    assert ids(relay.poll(t, q(message="disk full"))) == [b["id"]]  # case-sensitive
    assert ids(relay.poll(t, q(title="NAS", message="disk full"))) == []  # all must match
    # ntfy's short aliases: t, m, and an unknown id matches nothing
    assert ids(relay.poll(t, q(t="NAS backup"))) == [c["id"]]
    assert ids(relay.poll(t, q(m="disk full"))) == [b["id"]]
    assert relay.poll(t, q(id="aaaaaaaaaaaa")) == []


def _poll_headers(relay: Relay, t: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    status, body = relay.request("GET", f"/{t}/json", None, {"X-Poll": "1", **headers})
    assert status == 200, body
    if isinstance(body, dict):
        return [body]
    return [json.loads(line) for line in body.splitlines() if line]


def test_filters_as_headers_and_aliases(relay: Relay) -> None:
    t = topic()
    a = relay.publish(t, "one", Title="T1", Priority="5", Tags="fire,house")
    b = relay.publish(t, "two", Title="T2", Priority="2", Tags="house")
    assert ids(_poll_headers(relay, t, {"X-Title": "T2"})) == [b["id"]]
    assert ids(_poll_headers(relay, t, {"Title": "T1"})) == [a["id"]]
    assert ids(_poll_headers(relay, t, {"X-Message": "two"})) == [b["id"]]
    assert ids(_poll_headers(relay, t, {"X-ID": a["id"]})) == [a["id"]]
    assert ids(_poll_headers(relay, t, {"Priority": "urgent"})) == [a["id"]]
    assert ids(_poll_headers(relay, t, {"Tag": "fire"})) == [a["id"]]
    # a header wins over the query parameter, as in ntfy's readParam
    status, body = relay.request("GET", f"/{t}/json?poll=1&title=T1", None, {"X-Title": "T2"})
    assert status == 200 and body["id"] == b["id"]
    # query aliases: p, prio, ta, tag; po=1 and si= for poll and since
    assert ids(relay.poll(t, q(p="2"))) == [b["id"]]
    assert ids(relay.poll(t, q(prio="max"))) == [a["id"]]
    assert ids(relay.poll(t, q(ta="fire,house"))) == [a["id"]]
    assert ids(relay.poll(t, q(tag="house"))) == [a["id"], b["id"]]
    status, body = relay.request("GET", f"/{t}/json?po=1&si={a['id']}")
    assert status == 200 and body["id"] == b["id"]


def test_filter_headers_are_rfc2047_decoded_and_rfc9218_priority_ignored(relay: Relay) -> None:
    t = topic()
    status, a = relay.request("POST", "/", json.dumps({"topic": t, "message": "x",
                                                      "title": "Grüße"}).encode())  # fmt: skip
    assert status == 200, a
    b = relay.publish(t, "y", Title="plain", Priority="2")
    status, body = relay.request("GET", f"/{t}/json?poll=1", None,
                                 {"X-Title": "=?UTF-8?B?R3LDvMOfZQ==?="})  # fmt: skip
    assert status == 200 and body["id"] == a["id"] and body["title"] == "Grüße"
    status, body = relay.request("GET", f"/{t}/json?poll=1", None, {"X-Title": "=?UTF-8?Q?plain?="})
    assert status == 200 and body["id"] == b["id"]
    # a proxy's RFC 9218 "Priority: u=3, i" is no priority filter (and no 40007), as in ntfy
    status, body = relay.request("GET", f"/{t}/json?poll=1", None, {"Priority": "u=3, i"})
    assert status == 200 and [json.loads(x)["id"] for x in body.splitlines()] == [a["id"], b["id"]]
    status, body = relay.request("GET", f"/{t}/json?poll=1&p=2", None, {"Priority": "u=1"})
    assert status == 200 and body["id"] == b["id"]  # ignored, so the query's p=2 counts


def test_invalid_priority_filter_is_ntfys_40007(relay: Relay) -> None:
    t = topic()
    for bad in ("9", "0", "highest"):
        status, body = relay.request("GET", f"/{t}/json?poll=1&priority={bad}")
        assert status == 400, (bad, body)
        assert body["code"] == 40007 and body["http"] == 400
        assert body["link"] == "https://ntfy.sh/docs/publish/#message-priority"


# --- since=none -----------------------------------------------------------------------------


async def test_since_none_replays_nothing(relay: Relay) -> None:
    t = topic()
    relay.publish(t, "old")
    status, body = relay.request("GET", f"/{t}/json?poll=1&since=none")
    assert status == 200 and body == ""
    async with aiohttp.ClientSession() as s, s.get(f"{relay.url}/{t}/json?since=none") as resp:
        async with asyncio.timeout(15):
            first = json.loads(await resp.content.readline())
            assert first["event"] == "open"
            new = await asyncio.to_thread(relay.publish, t, "new")
            while True:
                ev = json.loads(await resp.content.readline())
                if ev["event"] == "message":
                    break
        assert ev["id"] == new["id"] and ev["message"] == "new"


# --- X-Poll-ID: poll_request -----------------------------------------------------------------


async def _first_event(resp: aiohttp.ClientResponse, kind: str) -> bytes:
    """The next line of a /json stream whose event is ``kind`` (keepalives skipped)."""
    while True:
        line = await resp.content.readline()
        assert line, "stream ended"
        if json.loads(line)["event"] == kind:
            return line


async def test_poll_id_publishes_a_poll_request_event_that_is_not_stored(relay: Relay) -> None:
    t = topic()
    async with aiohttp.ClientSession() as s:
        plain = await s.get(f"{relay.url}/{t}/json")
        filtered = await s.get(f"{relay.url}/{t}/json?title=nothing+has+this+title")
        raw = await s.get(f"{relay.url}/{t}/raw")
        sse = await s.get(f"{relay.url}/{t}/sse")
        async with asyncio.timeout(15):
            for resp in (plain, filtered):
                await _first_event(resp, "open")
            assert await raw.content.readline() == b"\n"  # its open
            assert await sse.content.readline() == b"event: open\n"
            status, answer = await asyncio.to_thread(
                relay.request, "POST", f"/{t}", b"ignored body", {"X-Poll-ID": "abcDEF123456"}
            )
            assert status == 200, answer
            assert (answer["event"], answer["poll_id"], answer["message"]) == (
                "poll_request", "abcDEF123456", "New message")  # fmt: skip
            for resp in (plain, filtered):  # ntfy's filters apply to message events only
                ev = json.loads(await _first_event(resp, "poll_request"))
                assert (ev["id"], ev["topic"], ev["poll_id"]) == (answer["id"], t, "abcDEF123456")
            # SSE: a named event, as ntfy sends every event but message
            while (line := await sse.content.readline()) != b"event: poll_request\n":
                assert line, "SSE stream ended"
            data = await sse.content.readline()
            assert json.loads(data.removeprefix(b"data: "))["poll_id"] == "abcDEF123456"
            status, again = await asyncio.to_thread(
                relay.request, "PUT", f"/{t}?poll-id=xyz", b"", {}
            )  # the query form
            assert status == 200 and again["event"] == "poll_request"
            relay.publish(t, "after")
            lines = []
            while b"after\n" not in lines:  # raw: poll requests and keepalives are empty lines
                lines.append(await raw.content.readline())
            assert set(lines[:-1]) == {b"\n"}
        for resp in (plain, filtered, raw, sse):
            resp.close()
    assert [m["message"] for m in relay.poll(t)] == ["after"]  # poll requests are not stored


# --- publishing by GET, PUT / ----------------------------------------------------------------


@pytest.mark.parametrize("verb", ["publish", "send", "trigger"])
def test_get_publish_aliases(relay: Relay, verb: str) -> None:
    t = topic()
    status, msg = relay.request(
        "GET", f"/{t}/{verb}?" + q(message="Door open", title="Front", priority="4", tags="door")
    )
    assert status == 200, msg
    assert (msg["message"], msg["title"], msg["priority"], msg["tags"]) == (
        "Door open", "Front", 4, ["door"])  # fmt: skip
    status, bare = relay.request("GET", f"/{t}/{verb}")
    assert status == 200 and bare["message"] == "triggered"
    assert ids(relay.poll(t)) == [msg["id"], bare["id"]]


def test_put_root_with_a_json_body(relay: Relay) -> None:
    t = topic()
    body = json.dumps({"topic": t, "message": "via PUT", "title": "J", "priority": 5}).encode()
    status, msg = relay.request("PUT", "/", body)
    assert status == 200, msg
    assert (msg["topic"], msg["message"], msg["title"], msg["priority"]) == (t, "via PUT", "J", 5)
    assert ids(relay.poll(t)) == [msg["id"]]


# --- /v1/stats, /v1/account, UnifiedPush ------------------------------------------------------


def test_stats_has_ntfys_shape_and_keeps_topics(relay: Relay) -> None:
    t = topic()
    _, before = relay.request("GET", "/v1/stats")
    relay.publish(t, "x")
    relay.publish(t, "y")
    status, after = relay.request("GET", "/v1/stats")
    assert status == 200
    assert isinstance(after["messages"], int) and after["messages"] == before["messages"] + 2
    assert isinstance(after["messages_rate"], float) and after["messages_rate"] > 0
    assert after["topics"][t]["published"] == 2


def test_account_anonymous_view(relay: Relay) -> None:
    status, acc = relay.request("GET", "/v1/account")
    assert status == 200
    assert acc["username"] == "*" and acc["role"] == "anonymous"
    assert acc["limits"]["basis"] == "ip"
    assert acc["limits"]["messages_expiry_duration"] == 43200  # the default retention_age
    assert acc["limits"]["emails"] == 0
    assert acc["limits"]["attachment_file_size"] == 15 * 1024 * 1024  # [attachments] default
    assert acc["limits"]["attachment_expiry_duration"] == 3 * 3600


def test_unifiedpush_discovery_and_no_web_app(relay: Relay) -> None:
    t = topic()
    for query in ("up=1", "unifiedpush=true"):
        status, body = relay.request("GET", f"/{t}?{query}")
        assert (status, body) == (200, {"unifiedpush": {"version": 1}})
    status, body = relay.request("GET", f"/{t}", None, {"X-UnifiedPush": "1"})
    assert (status, body) == (200, {"unifiedpush": {"version": 1}})
    status, body = relay.request("GET", f"/{t}")
    assert status == 404 and body["code"] == 40401
    for path in ("/v1", "/a.b?up=1", "/v1?up=0"):  # ntfy: no web app → 404, never a 400
        status, body = relay.request("GET", path)
        assert status == 404 and body["code"] == 40401, (path, body)


# --- CORS, error codes -----------------------------------------------------------------------


async def test_cors_on_every_response_and_options_preflight(relay: Relay) -> None:
    t = topic()
    async with aiohttp.ClientSession() as s:
        async with s.options(f"{relay.url}/{t}") as resp:
            assert resp.status == 200
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
            assert resp.headers["Access-Control-Allow-Methods"] == "GET, PUT, POST, PATCH, DELETE"
            assert resp.headers["Access-Control-Allow-Headers"] == "*"
        async with s.options(f"{relay.url}/v1/account") as resp:
            assert resp.status == 200 and resp.headers["Access-Control-Allow-Headers"] == "*"
        for method, path in (("PUT", f"/{t}"), ("GET", f"/{t}/json?poll=1"),
                             ("GET", "/v1/health"), ("GET", "/nope/nope/nope"),
                             ("GET", f"/{t}/json?since=bad!"), ("GET", "/v1/stats")):  # fmt: skip
            async with s.request(method, relay.url + path, data=b"x") as resp:
                await resp.read()
                assert resp.headers.get("Access-Control-Allow-Origin") == "*", (method, path)
        async with s.get(f"{relay.url}/{t}/sse") as resp:
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
        async with s.ws_connect(f"{relay.url}/{t}/ws") as ws:
            assert ws._response.headers["Access-Control-Allow-Origin"] == "*"


def test_ntfy_error_codes(relay: Relay) -> None:
    status, body = relay.request("GET", f"/{topic()}/ws")  # no Upgrade header
    assert status == 400 and body["code"] == 40016
    assert body["link"] == "https://ntfy.sh/docs/subscribe/api/#websockets"
    status, body = relay.request("GET", "/a.b/json")
    assert status == 400 and body["code"] == 40009
    status, body = relay.request("GET", "/x/y/z")
    assert status == 404 and body["code"] == 40401


# --- /<topics>/auth and the token view of /v1/account -----------------------------------------


def _token(af: Path, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "edge_relay", "token", "--auth-file", str(af),
                          *args], env=child_env(), capture_output=True, text=True, timeout=30,
                         check=True)  # fmt: skip
    return out.stdout.strip()


def test_topic_auth_and_token_account(tmp_path: Path) -> None:
    af = tmp_path / "auth.json"
    reader = _token(af, "add", "phone", "--read", "home*")
    _token(af, "anonymous", "--read", "public*")
    relay = Relay(tmp_path / "r", args=["--auth-file", str(af)]).start()
    bearer = {"Authorization": f"Bearer {reader}"}
    try:
        assert relay.request("GET", "/publicnews/auth") == (200, {"success": True})
        assert relay.request("GET", "/homedoor,homegate/auth", None, bearer) == (
            200, {"success": True})  # fmt: skip
        status, body = relay.request("GET", "/homedoor/auth")
        assert status == 401 and body["code"] == 40101
        assert body["link"] == "https://ntfy.sh/docs/publish/#authentication"
        status, body = relay.request("GET", "/homedoor,alerts/auth", None, bearer)
        assert status == 403 and body["code"] == 40301 and "alerts" in body["error"]
        status, acc = relay.request("GET", "/v1/account", None, bearer)
        assert status == 200 and (acc["username"], acc["role"]) == ("phone", "user")
        assert relay.request("GET", "/v1/account")[1]["username"] == "*"
    finally:
        assert relay.stop() == 0
