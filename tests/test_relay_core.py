"""The relay's pure core and small I/O-free pieces: topic rules, mapping, filters, limits."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from agent.envelope import from_fields
from agent.errors import AuthError, ConfigError, MessageError
from edge_relay import auth, config
from edge_relay.core import (
    Filters,
    TokenBucket,
    check_relay_topic,
    mqtt_to_relay,
    parse_topic_list,
    relay_to_mqtt,
)


@pytest.mark.parametrize("name", ["../x", "a\x00b", "a/b", "", "x" * 65, "a b", "é", "v1"])
def test_hostile_topic_names_are_refused_with_the_reason(name: str) -> None:
    with pytest.raises(MessageError) as exc:
        check_relay_topic(name)
    assert exc.value.field == "topic"


def test_topic_list_limit_and_dedupe() -> None:
    assert parse_topic_list("a,b,a", limit=5) == ("a", "b")
    with pytest.raises(MessageError, match="too many topics"):
        parse_topic_list(",".join(["t"] * 10_000), limit=100)


@pytest.mark.parametrize(("mqtt", "relay"), [("home/door", "home-door"), ("a", "a"),
                                              ("x/y_z/w1", "x-y_z-w1")])  # fmt: skip
def test_mapping_rule_both_ways(mqtt: str, relay: str) -> None:
    assert mqtt_to_relay(mqtt) == relay
    assert relay_to_mqtt(relay) == mqtt
    assert relay_to_mqtt(mqtt_to_relay(mqtt)) == mqtt


@pytest.mark.parametrize("mqtt", ["home/front-door", "a//b", "home/#", "x/é"])
def test_mapping_refuses_what_cannot_round_trip(mqtt: str) -> None:
    with pytest.raises(MessageError):
        mqtt_to_relay(mqtt)


def test_filters_priority_any_tags_all() -> None:
    m = from_fields({"message": "x", "priority": 4, "tags": ["a", "b"]}, topic="t")
    assert Filters.parse("high,5", None).match(m)
    assert not Filters.parse("1,2", None).match(m)
    assert Filters.parse(None, "a,b").match(m)
    assert not Filters.parse(None, "a,c").match(m)
    with pytest.raises(MessageError):
        Filters.parse("loud", None)


def test_token_bucket_refills() -> None:
    b = TokenBucket(2, 1.0)
    assert [b.take("c", now=0.0) for _ in range(3)] == [True, True, False]
    assert b.take("other", now=0.0)
    assert b.take("c", now=1.0)
    assert not b.take("c", now=1.0)


def test_auth_param_is_base64_of_the_header() -> None:
    enc = base64.b64encode(b"Bearer tk_abc").decode().rstrip("=")
    assert auth.token_from_request(None, enc) == "tk_abc"
    assert auth.token_from_request("Bearer tk_x", None) == "tk_x"
    assert auth.token_from_request(None, None) is None
    for bad in ("%%%", base64.b64encode(b"Basic dTpw").decode()):
        with pytest.raises(AuthError):
            auth.token_from_request(None, bad)


def test_token_file_holds_only_hashes(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    token = auth.add_token(path, "alice", ["a*"], ["alerts"])
    assert token.startswith("tk_") and len(token) == 32
    assert token not in path.read_text()
    ident = auth.load(path).identify(token)
    assert ident.grant.allows("read", "abc") and not ident.grant.allows("write", "abc")
    auth.revoke_token(path, "alice")
    with pytest.raises(AuthError):
        auth.load(path).identify(token)


def test_config_file_env_flags(tmp_path: Path) -> None:
    f = tmp_path / "r.toml"
    f.write_text('listen = "127.0.0.1:1"\nkeepalive = 2\n[limits]\nmessage_size = 100\n')
    cfg = config.load({"listen": "127.0.0.1:3"}, config_file=f, env={"EDGE_RELAY_LISTEN": ":2"})
    assert (cfg.port, cfg.keepalive, cfg.limits.message_size) == (3, 2.0, 100)
    assert config.load({}, config_file=f, env={"EDGE_RELAY_LISTEN": ":2"}).port == 2
    f.write_text("[limits]\nmesage_size = 1\n")
    with pytest.raises(ConfigError, match=r"did you mean 'limits\.message_size'"):
        config.load({}, config_file=f, env={})
    with pytest.raises(ConfigError, match="listen"):
        config.load({"listen": "nope"}, env={})
