"""ntfy's publish and subscribe parameters as a table, checked against ``agent.ntfyproto``.

The expectations come from ntfy's documentation (docs/publish.md "List of all parameters",
docs/subscribe/api.md) and its server (server/server.go parsePublishParams, transformBodyJSON,
parseSince; server/actions.go and actions_test.go; server/util.go readParam), never from this
project's behaviour. A row id ending ``-server`` marks where the server decides and the docs
say less or otherwise.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.ntfyproto import NtfyError
from agent.ntfyproto.actions import parse_actions
from agent.ntfyproto.fields import Request
from agent.ntfyproto.publish import Publish, parse_json_publish, parse_publish
from agent.ntfyproto.since import parse_since
from agent.timeparse import Since

# docs/publish.md "List of all parameters": canonical header, its aliases (headers are
# case-insensitive; query params are the same names, lowercase)
DOC_TABLE: list[tuple[str, list[str], str, dict[str, Any]]] = [
    ("X-Message", ["Message", "m"], "hello", {"message": "hello"}),
    ("X-Title", ["Title", "t"], "Alert", {"title": "Alert"}),
    ("X-Priority", ["Priority", "prio", "p"], "urgent", {"priority": 5}),
    ("X-Tags", ["Tags", "Tag", "ta"], "warning, skull", {"tags": ["warning", "skull"]}),
    ("X-Click", ["Click"], "https://c.example/x", {"click": "https://c.example/x"}),
    ("X-Attach", ["Attach", "a"], "https://f.example/space.jpg",
     {"attachment": {"name": "space.jpg", "url": "https://f.example/space.jpg"}}),
    ("X-Markdown", ["Markdown", "md"], "yes", {"content_type": "text/markdown"}),
    ("X-Icon", ["Icon"], "https://i.example/a.png", {"icon": "https://i.example/a.png"}),
    ("X-Actions", ["Actions", "Action"], "view, Open, https://o.example",
     {"actions": [{"action": "view", "label": "Open", "clear": False,
                   "url": "https://o.example"}]}),
    # ntfy 2.16: readParam(r, "x-sequence-id", "sequence-id", "sid")
    ("X-Sequence-ID", ["Sequence-ID", "SID"], "dl-1_A", {"sequence_id": "dl-1_A"}),
]  # fmt: skip


def _forms() -> list[Any]:
    rows = []
    for canonical, aliases, value, expected in DOC_TABLE:
        for name in [canonical, *aliases]:
            rows.append(pytest.param("header", name, value, expected, id=f"header-{name}"))
            rows.append(pytest.param("header", name.upper(), value, expected,
                                     id=f"header-{name.upper()}"))  # fmt: skip
            rows.append(pytest.param("query", name.lower(), value, expected,
                                     id=f"query-{name.lower()}"))  # fmt: skip
    return rows


def _fields(p: Publish) -> dict[str, Any]:
    out = dict(p.fields)
    for a in out.get("actions", []):
        assert len(a.pop("id")) == 10  # actions.go: a fresh 10-character id each
    return out


def pub(headers: dict[str, str] | None = None, query: dict[str, str] | None = None,
        body: bytes = b"") -> Publish:  # fmt: skip
    return parse_publish(Request(headers or {}, query or {}, max_value=4096), body)


def code_of(fn: Any, *args: Any, **kwargs: Any) -> int:
    with pytest.raises(NtfyError) as info:
        fn(*args, **kwargs)
    assert info.value.body()["code"] == info.value.code
    return info.value.code


@pytest.mark.parametrize(("where", "name", "value", "expected"), _forms())
def test_every_documented_name_in_every_form(
    where: str, name: str, value: str, expected: dict[str, Any]
) -> None:
    p = pub({name: value}) if where == "header" else pub(query={name: value})
    got = _fields(p)
    assert {k: got.get(k) for k in expected} == expected


@pytest.mark.parametrize(
    ("headers", "query", "body", "expected"),
    [
        pytest.param({"X-Message": "a\\nb"}, {}, b"", {"message": "a\nb"}, id="x-message-newline"),
        pytest.param({"X-Message": "hdr"}, {}, b"  body  ", {"message": "body"},
                     id="body-wins-and-is-trimmed-server"),
        pytest.param({}, {}, b"", {"message": "triggered"}, id="empty-is-triggered"),
        pytest.param({}, {}, b"   ", {"message": "triggered"}, id="blank-is-triggered-server"),
        pytest.param({"Priority": "u=3, i"}, {}, b"x", {"priority": 3}, id="rfc9218-ignored"),
        pytest.param({"Priority": "u=1"}, {"p": "4"}, b"x", {"priority": 4},
                     id="rfc9218-then-query"),
        pytest.param({"X-Priority": "1", "Priority": "5"}, {}, b"x", {"priority": 1},
                     id="x-form-first"),
        pytest.param({"Title": "h"}, {"title": "q"}, b"x", {"title": "h"}, id="header-over-query"),
        pytest.param({"Title": "  "}, {"t": "q"}, b"x", {"title": "q"}, id="blank-header-skipped"),
        pytest.param({}, {"x-title": "q"}, b"x", {"title": "q"}, id="query-x-name-server"),
        pytest.param({"Title": "=?UTF-8?B?8J+HqfCfh6o=?="}, {}, b"x", {"title": "🇩🇪"},
                     id="rfc2047-base64"),
        pytest.param({"Title": "=?UTF-8?Q?=C3=84pfel?="}, {}, b"x", {"title": "Äpfel"},
                     id="rfc2047-q"),
        pytest.param({"Content-Type": "text/markdown"}, {}, b"x",
                     {"content_type": "text/markdown"}, id="content-type-markdown"),
        pytest.param({"Content-Type": "text/plain"}, {}, b"x", {"content_type": None},
                     id="content-type-plain"),
        pytest.param({}, {"md": "1"}, b"x", {"content_type": "text/markdown"}, id="md-1"),
        pytest.param({"Markdown": "no"}, {}, b"x", {"content_type": None}, id="markdown-no"),
        pytest.param({"X-Attach": "https://x.example/"}, {}, b"",
                     {"attachment": {"name": "attachment", "url": "https://x.example/"},
                      "message": "You received a file: attachment"}, id="attach-default-name"),
        pytest.param({"X-Attach": "https://x.example/a.pdf", "Filename": "b.pdf"}, {}, b"hi",
                     {"attachment": {"name": "b.pdf", "url": "https://x.example/a.pdf"},
                      "message": "hi"}, id="attach-with-filename"),
        pytest.param({"X-Tags": ",a,, b ,"}, {}, b"x", {"tags": ["a", "b"]}, id="tags-split"),
    ],
)  # fmt: skip
def test_publish_rules(
    headers: dict[str, str], query: dict[str, str], body: bytes, expected: dict[str, Any]
) -> None:
    got = _fields(pub(headers, query, body))
    assert {k: got.get(k) for k in expected} == expected


@pytest.mark.parametrize(
    ("headers", "body", "code"),
    [
        pytest.param({"Priority": "9"}, b"x", 40007, id="priority-9-not-clamped"),
        pytest.param({"Priority": "0"}, b"x", 40007, id="priority-0"),
        pytest.param({"X-Priority": "u=3, i"}, b"x", 40007, id="rfc9218-only-on-priority"),
        pytest.param({"p": "loud"}, b"x", 40007, id="priority-word"),
        pytest.param({"X-Email": "a@b.example"}, b"x", 40001, id="email-not-enabled"),
        pytest.param({"e": "a@b.example"}, b"x", 40001, id="email-alias-e"),
        pytest.param({"X-Call": "+12345"}, b"x", 40032, id="call-disabled"),
        pytest.param({"Call": "yes"}, b"x", 40032, id="call-yes"),
        pytest.param({"Icon": "ftp://x"}, b"x", 40021, id="icon-not-http"),
        pytest.param({"Attach": "file:///etc"}, b"x", 40013, id="attach-not-http"),
        pytest.param({"Filename": "a.txt"}, b"x", 40014, id="file-upload-no-attachments"),
        pytest.param({}, b"\xff\xfe", 40014, id="binary-body-is-an-attachment-server"),
        pytest.param({"Delay": "10m", "Cache": "no"}, b"x", 40002, id="delay-without-cache"),
        pytest.param({"Actions": "view, Open"}, b"x", 40018, id="view-needs-url"),
        pytest.param({"Actions": "bogus, Open, https://x"}, b"x", 40018, id="unknown-action"),
        pytest.param({"Title": "x" * 5000}, b"x", 41301, id="title-above-limit"),
    ],
)  # fmt: skip
def test_publish_refusals(headers: dict[str, str], body: bytes, code: int) -> None:
    assert code_of(pub, headers, None, body) == code


def test_publish_options_for_the_caller() -> None:
    assert pub({"X-Cache": "no"}, body=b"x").cache is False
    assert pub({"Cache": "off"}, body=b"x").cache is False  # toBool: only 1/yes/true are true
    assert pub({"Firebase": "no"}, body=b"x").firebase is False
    assert pub({"In": "30m"}, body=b"x").delay == "30m"
    assert pub(query={"at": "tomorrow, 10am"}, body=b"x").delay == "tomorrow, 10am"
    assert pub({"Template": "yes"}, body=b"{}").template == "inline"
    assert pub(query={"tpl": "1"}, body=b"{}").template == "inline"
    poll = pub({"X-Poll-ID": "abc"}, body=b"ignored")
    assert (poll.poll_id, poll.cache, poll.fields["message"]) == ("abc", False, "New message")
    up = pub(query={"up": "1"}, body=b"\x00\xff")
    assert up.unifiedpush and up.fields["encoding"] == "base64"
    assert up.fields["message"] == "AP8="
    assert pub({"Content-Encoding": "aes128gcm"}, body=b" x ").fields["message"] == " x "


# --- JSON publish (docs "Publish as JSON"; server transformBodyJSON) ---------------------------


def jpub(obj: Any, headers: dict[str, str] | None = None) -> tuple[str, Publish]:
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return parse_json_publish(Request(headers or {}, {}, max_value=4096), body, max_size=8192)


def test_json_docs_example() -> None:
    topic, p = jpub({
        "topic": "mytopic", "message": "Disk space is low at 5.1 GB",
        "title": "Low disk space alert", "tags": ["warning", "cd"], "priority": 4,
        "attach": "https://filesrv.lan/space.jpg", "filename": "diskspace.jpg",
        "click": "https://homecamera.lan/xasds1h2xsSsa/",
        "actions": [{"action": "view", "label": "Admin panel", "url": "https://filesrv.lan/admin"}],
    })  # fmt: skip
    assert topic == "mytopic"
    assert _fields(p) == {
        "message": "Disk space is low at 5.1 GB", "title": "Low disk space alert",
        "tags": ["warning", "cd"], "priority": 4,
        "attachment": {"name": "diskspace.jpg", "url": "https://filesrv.lan/space.jpg"},
        "click": "https://homecamera.lan/xasds1h2xsSsa/",
        "actions": [{"action": "view", "label": "Admin panel", "clear": False,
                     "url": "https://filesrv.lan/admin"}],
    }  # fmt: skip


def test_json_merges_headers_as_apprise_sends_them() -> None:
    # Apprise's ntfy plugin: topic/title/message in JSON, the rest as X- headers beside it
    _, p = jpub({"topic": "t", "title": "T", "message": "M"}, {
        "X-Priority": "5", "X-Tags": "a,b", "X-Click": "https://c.example",
        "X-Actions": "view, Open, https://o.example", "X-Icon": "https://i.example/x.png",
        "X-Markdown": "yes",
    })  # fmt: skip
    got = _fields(p)
    assert (got["priority"], got["tags"], got["click"]) == (5, ["a", "b"], "https://c.example")
    assert got["icon"] == "https://i.example/x.png" and got["content_type"] == "text/markdown"
    assert [a["label"] for a in got["actions"]] == ["Open"]


@pytest.mark.parametrize(
    ("obj", "headers", "key", "value"),
    [
        pytest.param({"topic": "t", "priority": 5}, {"Priority": "1"}, "priority", 5,
                     id="json-beats-plain-header"),
        pytest.param({"topic": "t", "title": "J"}, {"X-Title": "H"}, "title", "J",
                     id="json-replaces-x-header"),
        pytest.param({"topic": "t"}, {"Title": "H"}, "title", "H", id="absent-json-keeps-header"),
        pytest.param({"topic": "t", "priority": 0}, {"X-Priority": "2"}, "priority", 2,
                     id="json-zero-priority-is-unset"),
        pytest.param({"topic": "t", "markdown": True}, {}, "content_type", "text/markdown",
                     id="json-markdown"),
        pytest.param({"topic": "t", "message": ""}, {"X-Message": "H"}, "message", "triggered",
                     id="json-empty-message-server"),
        pytest.param({"Topic": "t", "Message": "M"}, {}, "message", "M",
                     id="json-keys-case-insensitive-server"),
        pytest.param({"topic": "t", "unknown": {"x": 1}}, {}, "message", "triggered",
                     id="unknown-keys-ignored"),
    ],
)  # fmt: skip
def test_json_merge(obj: dict[str, Any], headers: dict[str, str], key: str, value: Any) -> None:
    assert _fields(jpub(obj, headers)[1]).get(key) == value


@pytest.mark.parametrize(
    ("obj", "code"),
    [
        pytest.param(b"{not json", 40024, id="not-json"),
        pytest.param([1], 40024, id="not-object"),
        pytest.param({"message": "no topic"}, 40009, id="no-topic"),
        pytest.param({"topic": "a/b"}, 40009, id="bad-topic"),
        pytest.param({"topic": "t", "priority": "high"}, 40024, id="priority-string-server"),
        pytest.param({"topic": "t", "priority": 9}, 40007, id="priority-9"),
        pytest.param({"topic": "t", "tags": "a,b"}, 40024, id="tags-string-server"),
        pytest.param({"topic": "t", "markdown": "yes"}, 40024, id="markdown-string"),
        pytest.param({"topic": "t", "email": "a@b.example"}, 40001, id="json-email"),
        pytest.param({"topic": "t", "call": "+1234"}, 40032, id="json-call"),
        pytest.param({"topic": "t", "actions": [{"action": "view", "label": "l", "url": "u",
                                                 "clear": "false"}]}, 40024,
                     id="clear-string-is-a-type-error"),
        pytest.param({"topic": "t", "actions": [{"action": "view", "label": "l", "url": "u"}] * 4},
                     40018, id="four-actions"),
        pytest.param(b'{"topic": "t", "message": NaN}', 40024, id="nan"),
        pytest.param(b"{" + b'"topic": "t", "message": "' + b"x" * 9000 + b'"}', 41303,
                     id="json-too-large"),
    ],
)  # fmt: skip
def test_json_refusals(obj: Any, code: int) -> None:
    assert code_of(jpub, obj) == code


# --- Actions (docs "Action buttons"; server actions.go / actions_test.go) ----------------------


def acts(text: str) -> list[dict[str, Any]]:
    out = parse_actions(text)
    for a in out:
        assert len(a.pop("id")) == 10
    return out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("view, Open portal, https://home.nest.com/, clear=true; http, Turn down, "
                     "https://api.nest.com/, body='{\"temperature\": 65}'",
                     [{"action": "view", "label": "Open portal", "clear": True,
                       "url": "https://home.nest.com/"},
                      {"action": "http", "label": "Turn down", "clear": False,
                       "url": "https://api.nest.com/", "body": '{"temperature": 65}'}],
                     id="docs-short-form"),
        pytest.param("action=view, label=Open, url=https://x.example, clear=false",
                     [{"action": "view", "label": "Open", "clear": False,
                       "url": "https://x.example"}], id="long-form-clear-false-is-a-bool"),
        pytest.param("http, Close door, https://api.mygarage.lan/, method=PUT, "
                     "headers.Authorization=Bearer zAzsx1sk.., body={\"action\": \"close\"}",
                     [{"action": "http", "label": "Close door", "clear": False,
                       "url": "https://api.mygarage.lan/", "method": "PUT",
                       "headers": {"Authorization": "Bearer zAzsx1sk.."},
                       "body": '{"action": "close"}'}], id="docs-http-headers"),
        pytest.param("broadcast, Take picture, extras.cmd=pic, extras.camera=front",
                     [{"action": "broadcast", "label": "Take picture", "clear": False,
                       "extras": {"cmd": "pic", "camera": "front"}}], id="docs-broadcast"),
        pytest.param('action=http, "Look ma, \\"quotes\\"; and semicolons", url=http://e.example',
                     [{"action": "http", "label": 'Look ma, "quotes"; and semicolons',
                       "clear": False, "url": "http://e.example"}], id="quoted-label"),
        pytest.param("label=\"Out of order!\" , action=\"http\", url=http://e.example",
                     [{"action": "http", "label": "Out of order!", "clear": False,
                       "url": "http://e.example"}], id="keys-out-of-order"),
        pytest.param("view, Open, https://x.example, clear=False",
                     [{"action": "view", "label": "Open", "clear": False,
                       "url": "https://x.example"}], id="python-ntfy-clear-False"),
        pytest.param("http, Go, https://x.example, method=get",
                     [{"action": "http", "label": "Go", "clear": False,
                       "url": "https://x.example", "method": "GET"}], id="method-uppercased"),
        pytest.param('[{"action": "VIEW", "label": "J", "url": "https://j.example", "x": 1}]',
                     [{"action": "view", "label": "J", "clear": False,
                       "url": "https://j.example"}], id="json-form"),
        pytest.param("[]", [], id="json-empty"),
        # ntfy 2.16's copy action: the third bare value is the value to copy
        pytest.param("copy, Copy code, 123456",
                     [{"action": "copy", "label": "Copy code", "clear": False,
                       "value": "123456"}], id="copy-bare-value"),
        pytest.param('[{"action": "copy", "label": "C", "value": "v"}]',
                     [{"action": "copy", "label": "C", "clear": False, "value": "v"}],
                     id="copy-json"),
    ],
)  # fmt: skip
def test_actions(text: str, expected: list[dict[str, Any]]) -> None:
    assert acts(text) == expected


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        pytest.param('label="Out of order!" x, action="http", url=http://e.example',
                     "unexpected character 'x' at position 22", id="after-quote"),
        pytest.param('label="", action="http", url=http://e.example',
                     "parameter 'label' is required", id="empty-label"),
        pytest.param('label="xx", action="http", url=http://e.example, what is this anyway',
                     "term 'what is this anyway' unknown", id="fourth-bare-term"),
        pytest.param("fdsfdsf", "parameter 'action' cannot be 'fdsfdsf', valid values are "
                     "'view', 'broadcast', 'http' and 'copy'", id="unknown-action"),
        pytest.param("copy, Copy code", "parameter 'value' is required for action 'copy'",
                     id="copy-needs-value"),
        pytest.param('aaa=a, "bbb, \'ccc, ddd, eee "', "key 'aaa' unknown", id="unknown-key"),
        pytest.param('action=http, label="omg the end quote is missing',
                     "unexpected end of input, quote started at position 20", id="open-quote"),
        pytest.param(";;;;", "only 3 actions allowed", id="four-empty"),
        pytest.param(",,,,,,;;", "term '' unknown", id="commas"),
        pytest.param("action=http, label=a label, body=somebody",
                     "parameter 'url' is required for action 'http'", id="http-needs-url"),
        pytest.param("VIEW, Open, https://x.example", "term 'https://x.example' unknown",
                     id="uppercase-type-has-no-bare-url-server"),
        pytest.param("view, Open, https://x.example, clear=maybe",
                     "parameter 'clear' cannot be 'maybe', only boolean values are allowed "
                     "(true/yes/1/false/no/0)", id="clear-not-bool"),
        pytest.param("http, Go, https://x.example, method=GET, body=b",
                     "parameter 'body' cannot be set if method is GET", id="get-with-body"),
    ],
)  # fmt: skip
def test_action_errors_are_40018_with_ntfys_detail(text: str, detail: str) -> None:
    with pytest.raises(NtfyError) as info:
        parse_actions(text)
    assert info.value.code == 40018
    assert str(info.value) == f"invalid request: actions invalid; {detail}"
    assert info.value.body()["link"] == "https://ntfy.sh/docs/publish/#action-buttons"


# --- since= (docs subscribe/api "Fetch cached messages"; server parseSince) --------------------

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "poll", "expected"),
    [
        pytest.param("", False, None, id="absent-nothing"),
        pytest.param("", True, Since("all"), id="absent-poll-all"),
        pytest.param("all", False, Since("all"), id="all"),
        pytest.param("latest", False, Since("latest"), id="latest"),
        pytest.param("none", True, None, id="none"),
        pytest.param("abcDEF123456", False, Since("id", id="abcDEF123456"), id="message-id"),
        pytest.param("30", False, Since("time", time=30), id="30-is-a-unix-time"),
        pytest.param("1645970742", False, Since("time", time=1645970742), id="docs-timestamp"),
        pytest.param("10m", False, Since("time", time=int(NOW) - 600), id="docs-10m"),
        pytest.param("1h30m", False, Since("time", time=int(NOW) - 5400), id="go-compound"),
        pytest.param("1.5h", False, Since("time", time=int(NOW) - 5400), id="go-fraction"),
        pytest.param("-5", False, Since("time", time=0), id="before-1970-is-all"),
        pytest.param("msg-1", False, Since("id", id="msg-1"), id="mqtt-id-extension"),
    ],
)  # fmt: skip
def test_since(value: str, poll: bool, expected: Since | None) -> None:
    assert parse_since(value, poll=poll, now=NOW) == expected


@pytest.mark.parametrize("value", ["garbage", "10d", "yesterday", "1e5"])
def test_since_refusals_are_40008(value: str) -> None:
    # "10d": Go's time.ParseDuration has no day unit (server, not the docs' examples)
    assert code_of(parse_since, value, poll=False, now=NOW) == 40008


def test_subscribe_reads_since_by_its_aliases() -> None:
    from agent.ntfyproto import fields

    for headers, query in (({"X-Since": "all"}, {}), ({"Since": "all"}, {}), ({}, {"si": "all"}),
                           ({}, {"since": "all"})):  # fmt: skip
        assert Request(headers, query).read(fields.SINCE) == "all"
    assert Request({}, {"po": "1"}).read_bool(fields.POLL, False) is True


def test_since_a_stored_id_outside_ntfys_id_rule_resumes_and_an_unknown_word_is_40008() -> None:
    """A publisher's own id (``m0001``: not 12 characters, no ``-_.:``) that the relay stores is
    a resume point, or an agent resuming with it would get 400 forever (the failover test's
    relay restart did); the same word, not stored, keeps ntfy's 40008."""
    stored = {"m0001"}.__contains__
    assert parse_since("m0001", poll=False, now=NOW, known_id=stored) == Since("id", id="m0001")
    assert code_of(parse_since, "garbage", poll=False, now=NOW, known_id=stored) == 40008
    assert code_of(parse_since, "m0001", poll=False, now=NOW) == 40008


def test_json_publish_with_nan_beside_a_surrogate_escape_is_40024_not_a_crash() -> None:
    """Found by tests/test_hostile_paths.py's generator: the surrogate check re-encoded the
    parsed body, met the NaN placeholder, and raised TypeError (a 500 at the relay)."""
    body = b'{"topic":"alerts","message":"m","id":{"":NaN,"\\ud800\\udc00":1e400}}'
    assert code_of(parse_json_publish, Request([], {}, max_value=4096), body,
                   max_size=4096) == 40024  # fmt: skip


@pytest.mark.parametrize("key", ["extras", "zz", "actions"])
def test_json_publish_nested_deeper_than_the_stack_is_an_answer_not_a_500(key: str) -> None:
    """Found by tests/test_hostile_paths.py's generator: a 500-deep array under any key made
    the NaN scan recurse past Python's stack (RecursionError, a 500 at the relay). ntfy ignores
    unknown keys whatever they hold; actions must be objects (40024)."""
    body = b'{"topic":"a","message":"m","' + key.encode() + b'":' + b"[" * 500 + b"]" * 500 + b"}"
    if key == "actions":
        assert code_of(parse_json_publish, Request([], {}), body, max_size=8192) == 40024
    else:
        assert parse_json_publish(Request([], {}), body, max_size=8192)[1].fields["message"] == "m"


@pytest.mark.parametrize("sid", ["a.b", "x" * 65, "a b", "ü"])
def test_sequence_id_refused_40049_in_every_form(sid: str) -> None:
    """ntfy 2.16: sequenceIDRegex is the topic rule, errHTTPBadRequestSequenceIDInvalid."""
    forms = [Request([("X-Sequence-ID", sid)], {}), Request([], {"sid": sid})]
    for req in forms:
        with pytest.raises(NtfyError) as err:
            parse_publish(req, b"m")
        assert err.value.code == 40049
    body = json.dumps({"topic": "t", "sequence_id": sid}).encode()
    with pytest.raises(NtfyError) as err:
        parse_json_publish(Request([], {}), body, max_size=8192)
    assert err.value.code == 40049


def test_json_sequence_id_is_kept() -> None:
    body = json.dumps({"topic": "t", "message": "m", "sequence_id": "job-7"}).encode()
    _, parsed = parse_json_publish(Request([], {}), body, max_size=8192)
    assert parsed.fields["sequence_id"] == "job-7"
