"""The pure rules of the MQTT transport's protocol choice and redelivery trust (no broker).

What the real brokers do is in tests/test_mqtt_brokers.py and
tests/test_broker_redelivery_probe.py; these pin the decisions taken from it.
"""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from agent.errors import ConfigError, ConnectionLost
from agent.transports.mqtt_protocol import (
    REPROBE_AFTER,
    ProtocolMemory,
    ProtocolRefused,
    Remembered,
    attempt_order,
    check_connack,
    negotiate,
)
from agent.transports.mqtt_redelivery import RedeliveryTrust

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("setting", "remembered", "order"),
    [
        ("auto", None, ("5", "3.1.1")),
        ("auto", Remembered("3.1.1", NOW - 3600), ("3.1.1", "5")),
        ("auto", Remembered("3.1.1", NOW - REPROBE_AFTER - 1), ("5", "3.1.1")),  # a week on
        ("auto", Remembered("5", NOW), ("5", "3.1.1")),
        ("5", Remembered("3.1.1", NOW), ("5",)),
        ("3.1.1", None, ("3.1.1",)),
    ],
)
def test_attempt_order(setting: str, remembered: Remembered | None, order: tuple[str]) -> None:
    assert attempt_order(setting, remembered, NOW) == order


@pytest.mark.parametrize("code", [0x84, 1])
def test_a_connack_refusing_the_protocol_is_a_protocol_refusal(code: int) -> None:
    with pytest.raises(ProtocolRefused):
        check_connack(code, "5")
    check_connack(0, "5")  # success: nothing
    check_connack(0x87, "5")  # not authorized: not ours to judge (AuthError elsewhere)


def _attempts(refuse: set[str]) -> tuple[list[str], Callable[[str], Awaitable[str]]]:
    tried: list[str] = []

    async def attempt(protocol: str) -> str:
        tried.append(protocol)
        if protocol in refuse:
            raise ProtocolRefused(protocol, f"no {protocol}", explicit=True)
        return f"conn-{protocol}"

    return tried, attempt


def test_negotiate_falls_back_remembers_and_goes_straight_there_next_time(tmp_path: Path) -> None:
    memory = ProtocolMemory(tmp_path)
    tried, attempt = _attempts({"5"})
    kw: dict[str, Any] = {
        "setting": "auto",
        "server": "mqtt://b:1",
        "memory": memory,
        "key": "[mqtt] protocol",
    }
    assert asyncio.run(negotiate(attempt, **kw)) == ("conn-3.1.1", "3.1.1")
    assert tried == ["5", "3.1.1"]
    assert stat.S_IMODE(memory.path.stat().st_mode) == 0o600
    tried.clear()
    asyncio.run(negotiate(attempt, **kw))
    assert tried == ["3.1.1"]
    tried.clear()
    asyncio.run(negotiate(attempt, probe=True, **kw))
    assert tried == ["5", "3.1.1"]


def test_a_failure_after_the_connack_still_settles_the_protocol(tmp_path: Path) -> None:
    """A SUBSCRIBE refused (a cluster electing) after a 3.1.1 CONNACK: the retry goes straight
    to 3.1.1, and MQTT 5's refusal is not logged again."""
    memory = ProtocolMemory(tmp_path)
    answered: list[str] = []

    async def attempt(protocol: str) -> str:
        if protocol == "5":
            raise ProtocolRefused("5", "no 5", explicit=True)
        answered.append(protocol)
        raise ConnectionLost("subscription refused for now")

    with pytest.raises(ConnectionLost, match="refused for now"):
        asyncio.run(negotiate(attempt, setting="auto", server="s", memory=memory, key="k",
                              answered=lambda: answered[-1] if answered else None))  # fmt: skip
    assert memory.get("s") is not None and memory.get("s").protocol == "3.1.1"  # type: ignore[union-attr]


def test_a_set_protocol_the_broker_refuses_is_a_config_error_naming_the_key(
    tmp_path: Path,
) -> None:
    _, attempt = _attempts({"5"})
    with pytest.raises(ConfigError, match=r"does not speak MQTT 5.*set \[upstream\] protocol"):
        asyncio.run(negotiate(attempt, setting="5", server="s", memory=ProtocolMemory(tmp_path),
                              key="[upstream] protocol"))  # fmt: skip
    assert not (tmp_path / "mqtt-protocols.json").exists()  # nothing remembered by hand


def test_both_refused_is_a_plain_connection_loss_and_nothing_is_remembered(
    tmp_path: Path,
) -> None:
    _, attempt = _attempts({"5", "3.1.1"})
    with pytest.raises(ConnectionLost, match=r"no 3\.1\.1"):
        asyncio.run(negotiate(attempt, setting="auto", server="s", memory=ProtocolMemory(tmp_path),
                              key="k"))  # fmt: skip
    assert not (tmp_path / "mqtt-protocols.json").exists()


def test_a_damaged_memory_file_is_an_empty_memory(tmp_path: Path) -> None:
    (tmp_path / "mqtt-protocols.json").write_text("{not json")
    memory = ProtocolMemory(tmp_path)
    assert memory.read() == {}
    memory.put("s", "3.1.1", NOW)
    memory.mark_untrusted("s", "renumbers")
    assert json.loads(memory.path.read_text()) == {
        "s": {"protocol": "3.1.1", "probed": NOW, "untrusted": "renumbers"}
    }
    memory.put("s", "3.1.1", NOW + 1)  # a new probe keeps the verdict
    assert memory.get("s") == Remembered("3.1.1", NOW + 1, "renumbers")


# --- redelivery trust ---------------------------------------------------------------------


def test_auto_trusts_mqtt5_and_not_311() -> None:
    t = RedeliveryTrust("auto", "s")
    t.connected("5", False)
    assert t.trusted
    t.connected("3.1.1", False)
    assert not t.trusted


@pytest.mark.parametrize(("setting", "trusted"), [("trusted", True), ("untrusted", False)])
def test_a_set_redelivery_is_what_it_says(setting: str, trusted: bool) -> None:
    t = RedeliveryTrust(setting, "s")
    for protocol in ("5", "3.1.1"):
        t.connected(protocol, True)
        t.observe(1, False)
        t.observe(1, False)  # misbehaviour changes nothing that was set by hand
        assert t.trusted is trusted


def test_sequential_ids_and_dup_resends_keep_trust() -> None:  # mosquitto
    seen: list[str] = []
    t = RedeliveryTrust("auto", "s", on_untrusted=seen.append)
    t.connected("5", False)
    for pid in (1, 2, 3):
        t.observe(pid, False)
    t.connected("5", True)
    for pid in (1, 2, 3):
        t.observe(pid, True)  # resends keep their ids
    t.observe(4, False)  # and numbering goes on
    assert t.trusted and seen == []


def test_an_id_reused_for_a_new_message_ends_trust_once() -> None:  # NATS
    seen: list[str] = []
    t = RedeliveryTrust("auto", "s", on_untrusted=seen.append)
    t.connected("5", False)
    t.observe(1, False)
    t.observe(1, False)
    t.observe(1, False)
    assert not t.trusted and len(seen) == 1 and "reused" in seen[0]
    t.connected("5", False)
    assert not t.trusted  # for good


def test_numbering_from_1_again_on_a_resumed_session_ends_trust() -> None:  # RabbitMQ
    seen: list[str] = []
    t = RedeliveryTrust("auto", "s", on_untrusted=seen.append)
    t.connected("5", False)
    for pid in (1, 2, 3):
        t.observe(pid, False)
    t.connected("5", True)
    t.observe(1, False)
    assert not t.trusted and "start again at 1" in seen[0]


def test_a_remembered_verdict_holds_from_the_start() -> None:
    t = RedeliveryTrust("auto", "s", known_untrusted="renumbers")
    t.connected("5", False)
    assert not t.trusted
