"""The broken cases of issue 11's "Why" (publish side), against a real relay process, and real
foreign ntfy clients (Apprise's ntfy plugin, python-ntfy) publishing to it.

Every test here failed on main before ntfyproto (run from a main checkout): fields were lost,
priorities clamped, since= misread, Basic auth refused.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import apprise
import pytest
from python_ntfy import NtfyClient

from agent import config
from agent.config import ReceiptsConfig
from agent.service import AgentService
from edge_relay import auth
from tests.notifyhelp import until
from tests.relay import FAST, Relay, module_relay


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    yield from module_relay(tmp_path_factory, "relay")


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Relay, str]]:
    tmp = tmp_path_factory.mktemp("secured")
    authfile = tmp / "auth.json"
    token = auth.add_token(authfile, "pub", ["s*"], ["s*"])
    r = Relay(tmp / "r", config=FAST, args=["--auth-file", str(authfile)]).start()
    try:
        yield r, token
    finally:
        assert r.stop() == 0, r.log.read_text()


def topic(prefix: str = "t") -> str:
    return prefix + uuid.uuid4().hex[:12]


def stored(relay: Relay, t: str, token: str | None = None) -> dict[str, Any]:
    """The one message cached on ``t`` (``poll=1``), read with ``token`` if given."""
    if token is None:
        msgs = relay.poll(t)
    else:
        hdr = {"Authorization": f"Bearer {token}"}
        status, text = relay.request("GET", f"/{t}/json?poll=1", None, hdr)
        assert status == 200, text
        msgs = [text] if isinstance(text, dict) else [json.loads(x) for x in text.splitlines()]
    assert len(msgs) == 1, msgs
    return dict(msgs[0])


def test_json_publish_keeps_the_x_headers_beside_it(relay: Relay) -> None:
    t = topic()
    body = json.dumps({"topic": t, "message": "m"}).encode()
    status, msg = relay.request("POST", "/", body, {
        "X-Priority": "5", "X-Tags": "a,b", "X-Click": "https://c.example",
        "X-Actions": "view, Open, https://o.example", "X-Icon": "https://i.example/x.png",
    })  # fmt: skip
    assert status == 200, msg
    got = stored(relay, t)
    assert (got["priority"], got["tags"], got["click"]) == (5, ["a", "b"], "https://c.example")
    assert got["icon"] == "https://i.example/x.png"
    assert [(a["action"], a["label"], a["url"]) for a in got["actions"]] == [
        ("view", "Open", "https://o.example")]  # fmt: skip


def test_long_form_actions_quoted_values_headers_and_clear_false(relay: Relay) -> None:
    t = topic()
    relay.publish(t, "x", Actions='action=view, label="Open, now", url=https://o.example, '
                  "clear=false; http, Ping, https://p.example, headers.X-Key=k, "
                  "method=put")  # fmt: skip
    a = stored(relay, t)["actions"]
    assert a[0]["label"] == "Open, now" and a[0]["url"] == "https://o.example"
    assert a[0]["clear"] is False
    assert (a[1]["url"], a[1]["headers"], a[1]["method"]) == ("https://p.example", {"X-Key": "k"},
                                                              "PUT")  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"Actions": "view, A, https://a; view, B, https://b; view, C, https://c; "
                     "view, D, https://d"}, 40018),
        ({"Actions": "launch, Go, https://x"}, 40018),
        ({"Actions": "view, Open"}, 40018),
        ({"Priority": "9"}, 40007),
        ({"Priority": "0"}, 40007),
        ({"X-Email": "me@example.com"}, 40001),
        ({"X-Call": "+4912345"}, 40032),
        ({"X-Delay": "5s"}, 40005),
        ({"In": "later, maybe"}, 40004),
        ({"At": "4d"}, 40006),
        ({"X-Template": "yes"}, 40042),  # the body "x" is not JSON
    ],
)  # fmt: skip
def test_refused_with_ntfys_code_and_nothing_stored(
    relay: Relay, headers: dict[str, str], code: int
) -> None:
    t = topic()
    status, body = relay.request("PUT", f"/{t}", b"x", headers)
    assert (status, body["code"], body["http"]) == (400, code, 400), body
    assert relay.poll(t) == []


def test_rfc9218_priority_header_is_ignored(relay: Relay) -> None:
    t = topic()
    assert relay.publish(t, "x", Priority="u=3, i")["priority"] == 3


def test_markdown_icon_message_escape_and_rfc2047(relay: Relay) -> None:
    t = topic()
    status, _ = relay.request("PUT", f"/{t}?md=1", b"", {
        "X-Message": "line1\\nline2", "X-Icon": "https://i.example/a.png",
        "Title": "=?UTF-8?B?8J+HqfCfh6o=?="})  # fmt: skip
    assert status == 200
    got = stored(relay, t)
    assert (got["message"], got["content_type"]) == ("line1\nline2", "text/markdown")
    assert (got["icon"], got["title"]) == ("https://i.example/a.png", "🇩🇪")


def test_since_none_garbage_and_a_unix_time(relay: Relay) -> None:
    t = topic()
    relay.publish(t, "one")
    assert relay.poll(t, "since=none") == []
    assert len(relay.poll(t, "since=30")) == 1  # unix time 30: everything since 1970
    status, body = relay.request("GET", f"/{t}/json?poll=1&since=garbage")
    assert (status, body["code"]) == (400, 40008)
    assert body["link"] == "https://ntfy.sh/docs/subscribe/api/#fetch-cached-messages"


def test_basic_auth_with_a_token_as_password(secured: tuple[Relay, str]) -> None:
    relay, token = secured
    t = topic("s")
    basic = base64.b64encode(f":{token}".encode()).decode()
    status, msg = relay.request("PUT", f"/{t}", b"hi", {"Authorization": f"Basic {basic}"})
    assert status == 200 and msg["message"] == "hi"
    status, body = relay.request("PUT", f"/{t}", b"hi", {"Authorization": "Basic " +
                                 base64.b64encode(b":tk_wrong").decode()})  # fmt: skip
    assert (status, body["code"]) == (401, 40101)


# --- foreign clients ----------------------------------------------------------------------------


# Apprise's plugin loader imports imghdr (deprecated in 3.11): its warning, not ours
@pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")
def test_apprise_ntfy_plugin_keeps_every_field(secured: tuple[Relay, str]) -> None:
    relay, token = secured
    t = topic("s")
    query = urlencode({"priority": "high", "tags": "door,warning", "click": "https://c.example/x",
                       "actions": "view, Open, https://o.example", "image": "no",
                       "token": token}, quote_via=quote)  # fmt: skip
    url = f"ntfy://127.0.0.1:{relay.url.rsplit(':', 1)[1]}/{t}?{query}"
    a = apprise.Apprise()
    assert a.add(url)
    assert bool(a.notify(title="Door", body="Front door opened"))
    got = stored(relay, t, token)
    assert (got["title"], got["message"], got["priority"]) == ("Door", "Front door opened", 4)
    assert got["tags"] == ["door", "warning"] and got["click"] == "https://c.example/x"
    assert [(x["label"], x["url"]) for x in got["actions"]] == [("Open", "https://o.example")]


def test_python_ntfy_actions_token_markdown(secured: tuple[Relay, str]) -> None:
    relay, token = secured
    t = topic("s")
    client = NtfyClient(topic=t, server=relay.url, auth=token)  # Basic with ":token"
    client.send(message="**hi**", title="T", priority=client.MessagePriority.HIGH,
                tags=["a"], actions=[client.ViewAction(label="Open", url="https://o.example")],
                format_as_markdown=True)  # fmt: skip
    got = stored(relay, t, token)
    assert (got["message"], got["title"], got["priority"], got["tags"]) == ("**hi**", "T", 4,
                                                                             ["a"])  # fmt: skip
    assert got["content_type"] == "text/markdown"
    assert [(x["action"], x["label"], x["url"], x["clear"]) for x in got["actions"]] == [
        ("view", "Open", "https://o.example", False)]  # fmt: skip


@pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")
async def test_an_agent_on_the_relay_gets_what_apprise_and_python_ntfy_publish(
    relay: Relay, tmp_path: Path
) -> None:
    """The whole way: foreign publishers → the relay → the agent's WebSocket subscription →
    its store, every field intact."""
    t = topic("agent")
    cfg = config.load({}, env={"PUSHAGENT_HOME": str(tmp_path / "home")})
    cfg = replace(cfg, servers=(relay.url,), topics=(t,), notifier="log",
                  receipts=ReceiptsConfig(enabled=False))  # fmt: skip
    async with AgentService(cfg) as svc:  # its first since= is its start: no wait needed
        fields = {"priority": "high", "tags": "door,warning", "click": "https://c.example/x",
                  "image": "no", "actions": "view, Open, https://o.example"}  # fmt: skip
        query = urlencode(fields, quote_via=quote)
        a = apprise.Apprise()
        assert a.add(f"ntfy://127.0.0.1:{relay.port}/{t}?{query}")
        assert await asyncio.to_thread(a.notify, title="Door", body="Front door opened")
        await until(lambda: svc.store.count() == 1, what="Apprise's message in the store")
        got = svc.store.last_message()
        assert got is not None
        m = got.message
        assert (m.title, m.message, m.priority, m.tags) == ("Door", "Front door opened", 4,
                                                             ("door", "warning"))  # fmt: skip
        assert m.click == "https://c.example/x"
        assert [(x["label"], x["url"]) for x in m.actions] == [("Open", "https://o.example")]
        client = NtfyClient(topic=t, server=relay.url)
        await asyncio.to_thread(
            client.send, message="**hi**", title="T", priority=client.MessagePriority.URGENT,
            tags=["a"], actions=[client.HttpAction(label="Retry", url="https://h.example")],
            format_as_markdown=True,
        )  # fmt: skip
        await until(lambda: svc.store.count() == 2, what="python-ntfy's message in the store")
        got = svc.store.last_message()
        assert got is not None
        m = got.message
        assert (m.message, m.title, m.priority, m.tags) == ("**hi**", "T", 5, ("a",))
        assert m.content_type == "text/markdown"
        assert [(x["action"], x["label"], x["url"]) for x in m.actions] == [
            ("http", "Retry", "https://h.example")]  # fmt: skip
