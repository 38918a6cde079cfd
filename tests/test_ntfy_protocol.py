"""The pure ntfy protocol core and server choice: no sockets, no event loop."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.discovery import relay_url
from agent.errors import ConfigError, ConnectionLost
from agent.ntfy import (
    dead_after,
    parse_frame,
    parse_server,
    server_kind,
    subscription,
    ws_url,
)
from agent.servers import Candidate, choose, expand

MAX = 64 * 1024


# --- frames ---------------------------------------------------------------------------------


def test_open_keepalive_and_poll_request_are_control_events() -> None:
    for kind in ("open", "keepalive", "poll_request"):
        frame = json.dumps({"id": "x1", "time": 1, "event": kind, "topic": "a"})
        assert parse_frame(frame, max_size=MAX).kind == kind


def test_message_event_becomes_a_message_without_the_event_field() -> None:
    frame = json.dumps(
        {"id": "abc", "time": 1700000000, "event": "message", "topic": "alerts",
         "message": "disk full", "priority": 5, "tags": ["warning"], "title": "T"}
    )  # fmt: skip
    ev = parse_frame(frame.encode(), max_size=MAX)
    assert ev.kind == "message" and ev.message is not None
    assert (ev.message.id, ev.message.topic, ev.message.message) == ("abc", "alerts", "disk full")
    assert ev.message.priority == 5 and ev.message.tags == ("warning",)
    assert "event" not in ev.message.extra


def test_bad_message_is_rejected_with_its_field_and_id_not_raised() -> None:
    frame = json.dumps({"id": "m1", "time": 1, "event": "message", "topic": "a",
                        "priority": "purple"})  # fmt: skip
    ev = parse_frame(frame, max_size=MAX)
    assert ev.kind == "rejected" and ev.id == "m1"
    assert ev.reason is not None and "priority" in ev.reason


def test_unknown_events_are_ignored() -> None:
    assert parse_frame('{"event":"message_shred","id":"x"}', max_size=MAX).kind == "other"


@pytest.mark.parametrize(
    ("frame", "words"),
    [
        ("hello", "not JSON"),
        ("[1,2]", "not an object"),
        ('{"id":"x"}', "without an 'event'"),
        (b"\xff\xfe", "not UTF-8"),
        ('{"event": NaN}', "not JSON"),
    ],
)
def test_broken_stream_raises_connection_lost_naming_why(frame: str | bytes, words: str) -> None:
    with pytest.raises(ConnectionLost, match=words):
        parse_frame(frame, max_size=MAX)


def test_oversize_frame_is_a_broken_stream() -> None:
    with pytest.raises(ConnectionLost, match="above 100 bytes"):
        parse_frame('{"event":"keepalive","x":"' + "a" * 200 + '"}', max_size=100)


@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_any_frame_gives_an_event_or_connection_lost(frame: str | bytes) -> None:
    try:
        ev = parse_frame(frame, max_size=MAX)
    except ConnectionLost:
        return
    assert ev.kind in ("open", "keepalive", "message", "poll_request", "rejected", "other")


# --- URLs -----------------------------------------------------------------------------------


def test_server_kinds() -> None:
    assert server_kind("auto") == "auto"
    assert server_kind("https://ntfy.sh") == "ntfy"
    assert server_kind("ws://relay:8080") == "ntfy"
    assert server_kind("mqtt://broker") == "mqtt"
    with pytest.raises(ConfigError, match="expected http"):
        server_kind("ftp://x")


def test_http_and_ws_forms_share_one_canonical_source() -> None:
    a = parse_server("http://relay.local:8080/")
    b = parse_server("ws://relay.local:8080")
    assert a.http_base == b.http_base == "http://relay.local:8080"
    assert a.ws_base == "ws://relay.local:8080" and a.port == 8080 and not a.tls
    c = parse_server("https://ntfy.example.org/push/")
    assert c.ws_base == "wss://ntfy.example.org/push" and c.port == 443 and c.tls
    assert c.receipts_url == "https://ntfy.example.org/push/v1/receipts"
    assert parse_server("wss://h:443").http_base == "https://h"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://user:pw@host", "pushagent login http://host --token-stdin"),
        ("http://host?x=1", "no \\?query"),
        ("http://:80", "no host"),
        ("http://host:99999", "out of range"),
        ("mqtt://host", "not an http"),
    ],
)
def test_bad_server_urls_are_config_errors(url: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_server(url)


def test_ws_url_joins_topics_on_one_socket_with_since() -> None:
    s = parse_server("http://127.0.0.1:9000/base")
    assert ws_url(s, ["b", "a"], "abc") == "ws://127.0.0.1:9000/base/b,a/ws?since=abc"
    assert ws_url(s, ["a-b_C9"], None) == "ws://127.0.0.1:9000/base/a-b_C9/ws"
    with pytest.raises(ConfigError, match="ntfy topic is 1-64 letters"):
        ws_url(s, ["a b"], None)  # ntfy answers 400 to it: refused before connecting
    assert subscription(["b", "a", "b"]) == "a,b"
    with pytest.raises(ConfigError, match="cannot be subscribed on an ntfy server"):
        ws_url(s, ["home/#"], None)
    with pytest.raises(ConfigError, match="--topic"):
        ws_url(s, [], None)


def test_dead_after_is_one_and_a_half_keepalives() -> None:
    assert dead_after(None) == 67.5
    assert dead_after(10) == 15.0
    assert dead_after(0) == 67.5


# --- choosing a server --------------------------------------------------------------------


def test_auto_expands_to_discovered_relays_at_its_rank() -> None:
    cands = expand(["auto", "mqtt://cloud"], ["http://r2:80", "http://r1:80"])
    assert [(c.url, c.rank) for c in cands] == [
        ("http://r1:80", 0), ("http://r2:80", 0), ("mqtt://cloud", 1),
    ]  # fmt: skip
    assert [c.url for c in expand(["auto", "mqtt://cloud"], [])] == ["mqtt://cloud"]


def test_relay_preferred_over_cloud_and_cloud_used_when_relay_cools_down() -> None:
    cands = expand(["auto", "mqtt://cloud"], ["http://r1:80"])
    assert choose(cands).url == "http://r1:80"  # type: ignore[union-attr]
    picked = choose(cands, cooldown={"http://r1:80": 100.0}, now=50.0)
    assert picked is not None and picked.url == "mqtt://cloud"
    picked = choose(cands, cooldown={"http://r1:80": 100.0}, now=101.0)
    assert picked is not None and picked.url == "http://r1:80"


def test_all_cooling_retries_the_one_that_cools_first() -> None:
    cands = expand(["http://a", "http://b"], [])
    picked = choose(cands, cooldown={"http://a": 20.0, "http://b": 10.0}, now=5.0)
    assert picked is not None and picked.url == "http://b"
    assert choose([]) is None


def test_two_relays_lowest_connect_time_wins_deterministically() -> None:
    times = {"http://r1:80": 0.004, "http://r2:80": 0.002}
    cands = expand(["auto"], ["http://r1:80", "http://r2:80"], times)
    assert choose(cands).url == "http://r2:80"  # type: ignore[union-attr]
    same = expand(["auto"], ["http://r2:80", "http://r1:80"], dict.fromkeys(times, 0.003))
    assert choose(same).url == "http://r1:80"  # type: ignore[union-attr]
    unmeasured = expand(["auto"], ["http://r1:80", "http://r2:80"], {"http://r2:80": 0.5})
    assert choose(unmeasured).url == "http://r2:80"  # type: ignore[union-attr]


def test_hysteresis_keeps_the_current_relay_unless_clearly_slower() -> None:
    def pick(t1: float, t2: float, current: str) -> str:
        cands = [Candidate("http://r1", 0, True, t1), Candidate("http://r2", 0, True, t2)]
        c = choose(cands, current=current)
        assert c is not None
        return c.url

    # r2 a little faster: stay on r1 (no flapping on jitter) ...
    assert pick(0.010, 0.008, "http://r1") == "http://r1"
    # ... and a few ms on a fast LAN is below the absolute floor too
    assert pick(0.003, 0.001, "http://r1") == "http://r1"
    # r2 much faster: move
    assert pick(0.050, 0.010, "http://r1") == "http://r2"
    # alternate measurements around the same value never move the agent
    current = "http://r1"
    for t1, t2 in [(0.010, 0.009), (0.009, 0.010), (0.011, 0.009), (0.009, 0.011)]:
        current = pick(t1, t2, current)
        assert current == "http://r1"


# --- discovery: a resolved relay's URL ------------------------------------------------------


def test_relay_url_from_mdns_records() -> None:
    assert relay_url(["192.168.1.5"], 8080, {b"tls": b"0", b"path": b"/"}) == (
        "http://192.168.1.5:8080"
    )
    assert relay_url(["10.0.0.2", "127.0.0.1"], 80, {}) == "http://127.0.0.1:80"
    assert relay_url(["fe80::1", "10.0.0.2"], 443, {b"tls": b"1"}) == "https://10.0.0.2:443"
    assert relay_url(["fd00::2"], 8080, {b"path": b"/push/"}) == "http://[fd00::2]:8080/push"
    assert relay_url([], 8080, {}) is None
    assert relay_url(["nonsense"], 8080, {}) is None
    assert relay_url(["10.0.0.2"], 0, {}) is None


def test_message_with_an_unpaired_surrogate_escape_is_rejected_not_stored() -> None:
    # it would decode, then fail to encode as UTF-8 in the store and stall the batch behind it
    ev = parse_frame('{"event": "message", "id": "m2", "message": "a\\ud800"}', max_size=4096)
    assert ev.kind == "rejected" and ev.id == "m2" and "surrogate" in (ev.reason or "")
