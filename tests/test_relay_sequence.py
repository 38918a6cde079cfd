"""ntfy 2.16's update / clear / delete by ``sequence_id`` against a real relay process.

Raw HTTP (urllib via tests.relay, aiohttp for /ws): the python-ntfy in the venv has no
sequence-id support, so the requests are written as ntfy's docs and server send them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from edge_relay import auth
from tests.relay import FAST, Relay, module_relay


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    yield from module_relay(tmp_path_factory, "relay")


def topic() -> str:
    return "sq" + uuid.uuid4().hex[:12]


def _sequence(relay: Relay, t: str) -> list[dict[str, Any]]:
    """message, update (path form), clear, delete on ``t``: the four answers."""
    answers = []
    for method, path, body, hdr in (
        ("POST", f"/{t}", b"Downloading", {"X-Sequence-ID": "dl-1"}),
        ("POST", f"/{t}/dl-1", b"Done", {}),
        ("PUT", f"/{t}/dl-1/clear", None, {}),
        ("DELETE", f"/{t}/dl-1", None, {}),
    ):
        status, got = relay.request(method, path, body, hdr)
        assert status == 200, got
        answers.append(got)
    return answers


def test_update_clear_delete_answers_and_replay(relay: Relay) -> None:
    t = topic()
    first, update, clear, delete = _sequence(relay, t)
    assert [a["event"] for a in (first, update, clear, delete)] == [
        "message", "message", "message_clear", "message_delete"]  # fmt: skip
    assert {a["sequence_id"] for a in (first, update, clear, delete)} == {"dl-1"}
    assert (first["message"], update["message"]) == ("Downloading", "Done")
    assert len({a["id"] for a in (first, update, clear, delete)}) == 4
    assert not {"message", "priority"} & (set(clear) | set(delete)), (clear, delete)
    replay = relay.poll(t)
    assert [(m["event"], m["sequence_id"]) for m in replay] == [
        ("message", "dl-1"), ("message", "dl-1"), ("message_clear", "dl-1"),
        ("message_delete", "dl-1")]  # fmt: skip
    after_first = relay.poll(t, f"since={first['id']}")
    assert [m["id"] for m in after_first] == [update["id"], clear["id"], delete["id"]]


def test_ws_and_json_subscribers_see_the_sequence(relay: Relay) -> None:
    t = topic()

    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with aiohttp.ClientSession() as s:
            ws = await s.ws_connect(f"{relay.url}/{t}/ws")
            js = await s.get(f"{relay.url}/{t}/json")
            opened = json.loads(await js.content.readline())
            assert opened["event"] == "open"
            assert json.loads((await ws.receive()).data)["event"] == "open"
            await asyncio.to_thread(_sequence, relay, t)
            wsgot = [json.loads((await ws.receive(timeout=20)).data) for _ in range(4)]
            jsgot = [json.loads(await js.content.readline()) for _ in range(4)]
            await ws.close()
            js.close()
            return wsgot, jsgot

    for got in asyncio.run(run()):
        assert [(m["event"], m["sequence_id"], m["topic"]) for m in got] == [
            ("message", "dl-1", t), ("message", "dl-1", t), ("message_clear", "dl-1", t),
            ("message_delete", "dl-1", t)]  # fmt: skip
        assert [m.get("message") for m in got[:2]] == ["Downloading", "Done"]
        # ntfy's clear/delete events (NewActionMessage) carry no text and no priority
        keys = {"id", "time", "expires", "event", "topic", "sequence_id"}
        assert [set(m) for m in got[2:]] == [keys, keys]


@pytest.mark.parametrize("how", ["header", "query", "json"])
def test_invalid_sequence_id_is_40049(relay: Relay, how: str) -> None:
    t = topic()
    bad = "no.dots!"
    if how == "header":
        status, got = relay.request("POST", f"/{t}", b"x", {"X-Sequence-ID": bad})
    elif how == "query":
        status, got = relay.request("POST", f"/{t}?sid=no.dots%21", b"x", {})
    else:
        body = json.dumps({"topic": t, "message": "x", "sequence_id": bad}).encode()
        status, got = relay.request("POST", "/", body, {})
    assert (status, got["code"]) == (400, 40049), got
    assert relay.poll(t) == []


def test_sequence_id_literally_json_or_publish_is_a_sequence_id(relay: Relay) -> None:
    t = topic()
    for sid in ("json", "publish"):
        status, got = relay.request("POST", f"/{t}/{sid}", b"m", {})
        assert status == 200, got
        assert (got["event"], got["sequence_id"]) == ("message", sid)
    status, got = relay.request("DELETE", f"/{t}/json", None, {})
    assert (status, got["event"], got["sequence_id"]) == (200, "message_delete", "json")
    assert len(relay.poll(t)) == 3  # GET /<t>/json stays a subscription


def test_clear_needs_write(tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp = tmp_path_factory.mktemp("seqauth")
    authfile = tmp / "auth.json"
    reader = auth.add_token(authfile, "reader", ["s*"], [])
    r = Relay(tmp / "r", config=FAST, args=["--auth-file", str(authfile)]).start()
    try:
        hdr = {"Authorization": f"Bearer {reader}"}
        for method, path in (("PUT", "/sx/a1/clear"), ("DELETE", "/sx/a1")):
            status, got = r.request(method, path, None, hdr)
            assert (status, got["code"]) == (403, 40301), got
    finally:
        assert r.stop() == 0, r.log.read_text()
