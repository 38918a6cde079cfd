"""Acknowledge-until-acked, the parts without processes: the publish parameters
(agent.ntfyproto.ack), the decisions (agent.ackcore), the store's schedule and its triggers
(migration 013), and the re-alert task on an event loop with a recording backend."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from agent import ackcore, dnd
from agent.config import Rule
from agent.envelope import Message, from_fields, new_id
from agent.ntfyproto import NtfyError
from agent.ntfyproto.fields import Request
from agent.ntfyproto.publish import parse_json_publish, parse_publish
from agent.realert import ReAlerter
from agent.store import Store, Stored


def publish(headers: dict[str, str] | None = None, query: dict[str, str] | None = None) -> Any:
    return parse_publish(Request(headers or {}, query or {}), b"fire").fields


# --- the publish parameters ----------------------------------------------------------------


def test_x_ack_headers_become_message_fields() -> None:
    out = publish({"X-Ack": "required", "X-Ack-Retry": "60s", "X-Ack-Expire": "1h"})
    assert (out["ack"], out["ack_retry"], out["ack_expire"]) == ("required", 60, 3600)
    msg = from_fields(out, topic="t")
    assert msg.extra == {"ack": "required", "ack_retry": 60, "ack_expire": 3600}


@pytest.mark.parametrize(
    ("given", "retry", "expire"),
    [({"ack": "required"}, 60, 3600),  # the defaults
     ({"ack": "yes", "ack-retry": "90", "ack-expire": "2 hours"}, 90, 7200),
     ({"ack": "1", "ack-retry": "1m30s", "ack-expire": "1.5h"}, 90, 5400),
     ({"ack": "required", "ack-retry": "1s", "ack-expire": "5s"}, 1, 5)],
)  # fmt: skip
def test_query_and_durations_read_like_ntfy_delays(
    given: dict[str, str], retry: int, expire: int
) -> None:
    out = publish(query=given)
    assert (out["ack"], out["ack_retry"], out["ack_expire"]) == ("required", retry, expire)


def test_json_publish_carries_ack() -> None:
    body = b'{"topic": "pager", "message": "fire", "ack": "required", "ack_retry": "30s"}'
    topic, parsed = parse_json_publish(Request({}), body, max_size=65536)
    assert topic == "pager"
    assert (parsed.fields["ack"], parsed.fields["ack_retry"]) == ("required", 30)


def test_no_ack_means_no_fields_and_no_means_no() -> None:
    assert "ack" not in publish()
    assert "ack" not in publish({"X-Ack": "no"})
    assert "ack_retry" not in publish({"X-Ack": "no"})


@pytest.mark.parametrize(
    ("headers", "words"),
    [({"X-Ack": "maybe"}, "X-Ack must be"),
     ({"X-Ack": "required", "X-Ack-Retry": "soon"}, "X-Ack-Retry 'soon' is not a duration"),
     ({"X-Ack": "required", "X-Ack-Retry": "0s"}, "between 1 s and 86400 s"),
     ({"X-Ack": "required", "X-Ack-Retry": "-5s"}, "between 1 s and 86400 s"),
     ({"X-Ack": "required", "X-Ack-Expire": "3d"}, "X-Ack-Expire"),
     ({"X-Ack": "required", "X-Ack-Expire": "2 days"}, "between 1 s and 86400 s"),
     ({"X-Ack": "required", "X-Ack-Retry": "10m", "X-Ack-Expire": "5m"}, "not be shorter")],
)  # fmt: skip
def test_bad_values_are_ntfy_400s_that_say_what(headers: dict[str, str], words: str) -> None:
    with pytest.raises(NtfyError) as exc:
        publish(headers)
    assert exc.value.http == 400 and exc.value.code == 40000
    assert words in str(exc.value), str(exc.value)
    assert exc.value.body()["error"].startswith("invalid request; ")


# --- the decisions ---------------------------------------------------------------------------


def test_urgent_rule_stamps_priority_5_on_matching_topics_only() -> None:
    rules = (Rule(topic="oncall/*", ack_urgent=True), Rule(topic="ci/*", min_priority=3))
    p5 = Message(id="a", time=1, topic="oncall/db", priority=5)
    assert ackcore.required(ackcore.stamp(p5, rules))
    assert ackcore.stamp(p5, rules).extra["ack_retry"] == 60
    kept = Message(id="b", time=1, topic="oncall/db", priority=5, extra={"ack_retry": 5})
    assert ackcore.stamp(kept, rules).extra["ack_retry"] == 5  # the publisher's interval
    for other in (Message(id="c", time=1, topic="oncall/db", priority=4),
                  Message(id="d", time=1, topic="ci/build", priority=5)):  # fmt: skip
        assert not ackcore.required(ackcore.stamp(other, rules))


@pytest.mark.parametrize(
    ("state", "now", "priority", "held", "verdict"),
    [("acknowledged", 0, 5, False, ackcore.STOP),
     (None, 0, 5, False, ackcore.STOP),
     ("displayed", 100, 5, False, ackcore.STOP),  # expired
     ("displayed", 0, 4, True, ackcore.HOLD),  # paused / quiet, below 5
     ("displayed", 0, 5, True, ackcore.ALERT),  # priority 5 ignores pause and quiet hours
     ("acknowledged", 0, 5, True, ackcore.STOP),
     ("clicked", 0, 3, False, ackcore.ALERT)],  # a click is not an acknowledgement
)  # fmt: skip
def test_decide(state: str | None, now: float, priority: int, held: bool, verdict: str) -> None:
    assert ackcore.decide(state=state, expires=100, priority=priority, now=now, held=held) == (
        verdict
    )


def test_realert_is_critical_and_marked() -> None:
    m = ackcore.realert_message(Message(id="a", time=1, topic="t", priority=3), 2)
    assert (m.priority, m.extra["realert"]) == (5, 2)
    assert ackcore.next_due(100.0, 5.0) == 105.0


# --- the store's schedule ----------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = Store(tmp_path / "agent.db").open()
    yield s
    s.close()


def ack_msg(retry: Any = 2, expire: Any = 60, **kw: Any) -> Message:
    extra = {"ack": "required", "ack_retry": retry, "ack_expire": expire}
    return Message(id=new_id(), time=int(time.time()), topic="t", extra=extra, **kw)


def test_insert_schedules_and_acknowledged_unschedules(store: Store) -> None:
    a, b, plain = ack_msg(), ack_msg(retry="junk", expire=10**9), Message(id="p", time=1, topic="t")
    before = time.time()
    store.insert_batch([a, b, plain])
    assert store.realert_count() == 2
    row_a, row_b = store.realert_get(a.id), store.realert_get(b.id)
    assert row_a is not None and row_b is not None
    assert before + 2 <= row_a.due <= time.time() + 2 and row_a.retry == 2
    assert row_b.retry == 60 and row_b.expires <= b.time + 86400  # junk → default; clamped
    store.insert_batch([a])  # a redelivery schedules nothing new
    assert store.realert_count() == 2
    store.record_states([(a.id, "acknowledged", time.time())])
    assert store.realert_get(a.id) is None
    store.record_states([(a.id, "read", time.time())])
    assert store.get(a.id).state == "acknowledged"  # type: ignore[union-attr]
    store.prune(max_age=0, max_messages=0, now=time.time() + 10)  # pruned: unscheduled
    store.mark_notified(10**6)
    store.prune(max_age=0, max_messages=0, now=time.time() + 10)
    assert store.realert_count() == 0


def test_expiry_counts_from_the_earlier_of_time_and_arrival(store: Store) -> None:
    # the publisher's clock is 1000 s ahead of ours: its expiry would come 1000 s late here
    ahead = dataclasses.replace(ack_msg(expire=60), time=int(time.time()) + 1000)
    store.insert_batch([ahead])
    row = store.realert_get(ahead.id)
    assert row is not None and row.expires <= time.time() + 61


def test_first_ack_recorded_wins_whatever_the_clocks(store: Store) -> None:
    assert store.ack_record("m", owner="o", device="b", device_name="B", at=1000.0)
    assert not store.ack_record("m", owner="o", device="c", device_name="C", at=999.0)
    rec = store.ack_get("m")
    assert rec is not None and (rec.device, rec.device_name) == ("b", "B")


def online(r: ReAlerter) -> ReAlerter:
    r.online()
    return r


# --- the task ------------------------------------------------------------------------------


class Screen:
    def __init__(self) -> None:
        self.shown: list[Stored] = []

    async def show(self, items: Sequence[Stored]) -> None:
        self.shown.extend(items)


async def test_task_realerts_until_acknowledged_then_sleeps(store: Store, tmp_path: Path) -> None:
    screen = Screen()
    m = ack_msg(retry=1, expire=60, priority=3)
    store.insert_batch([m])
    store.realert_moved(m.id, time.time(), 0)
    r = online(ReAlerter(store, screen.show))
    task = asyncio.create_task(r.run())
    try:
        await _until(lambda: len(screen.shown) >= 3)
        assert {s.message.priority for s in screen.shown} == {5}
        assert [s.message.extra["realert"] for s in screen.shown[:3]] == [1, 2, 3]
        store.record_states([(m.id, "acknowledged", time.time())])
        seen = len(screen.shown)
        await asyncio.sleep(3)  # three intervals: none may come (an outcome, not a wait)
        assert len(screen.shown) <= seen + 1  # at most the one already past its check
        assert store.realert_count() == 0
        # nothing scheduled: the task waits on its event, not on a timer
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_pause_holds_below_priority_5_only(store: Store) -> None:
    screen = Screen()
    low, high = ack_msg(retry=1, priority=3), ack_msg(retry=1, priority=5)
    store.insert_batch([low, high])
    for m in (low, high):
        store.realert_moved(m.id, time.time(), 0)
    dnd.pause(store, time.time() + 3600)
    task = asyncio.create_task(online(ReAlerter(store, screen.show)).run())
    try:
        await _until(lambda: sum(s.message.id == high.id for s in screen.shown) >= 3)
        assert not [s for s in screen.shown if s.message.id == low.id]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_expiry_ends_realerts(store: Store) -> None:
    screen = Screen()
    m = ack_msg(retry=1, expire=1)
    store.insert_batch([m])
    task = asyncio.create_task(online(ReAlerter(store, screen.show)).run())
    try:
        await _until(lambda: store.realert_count() == 0, timeout=10)
        assert len(screen.shown) <= 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _until(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_store_error_is_retried_not_a_crash(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from agent import realert
    from agent.errors import StoreBusy

    monkeypatch.setattr(realert, "RETRY_ON_ERROR", 0.1)
    screen = Screen()
    m = ack_msg(retry=1)
    store.insert_batch([m])
    store.realert_moved(m.id, time.time(), 0)
    real = store.realert_next
    fails = [StoreBusy("database is locked")]

    def flaky() -> Any:
        if fails:
            raise fails.pop()
        return real()

    monkeypatch.setattr(store, "realert_next", flaky)
    task = asyncio.create_task(online(ReAlerter(store, screen.show)).run())
    try:
        await _until(lambda: len(screen.shown) >= 1)
        assert "re-alerts: database is locked; trying again" in caplog.text
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_idle_means_asleep_not_polling(store: Store) -> None:
    """With one re-alert an hour away (and with none), the task reads the schedule once and
    sleeps until then or until woken: no timer ticks in between."""
    screen = Screen()
    m = ack_msg(retry=3600, expire=7200)
    store.insert_batch([m])
    reads = 0
    real = store.realert_next

    def counted() -> Any:
        nonlocal reads
        reads += 1
        return real()

    store.realert_next = counted  # type: ignore[method-assign]
    r = online(ReAlerter(store, screen.show))
    task = asyncio.create_task(r.run())
    try:
        await _until(lambda: reads == 1, timeout=10)
        await asyncio.sleep(1.0)  # an idle second: nothing may read the schedule again
        assert reads == 1 and screen.shown == []
        soon = ack_msg(retry=1)
        store.insert_batch([soon])
        r.wake()  # what the service does after committing an ack-required message
        await _until(lambda: [s.message.id for s in screen.shown] == [soon.id], timeout=10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_pushagent_ack_cli(tmp_path: Path) -> None:
    from tests.helpers import pushagent

    home = tmp_path / "home"
    home.mkdir()
    done = pushagent("ack", "nosuchid0001", home=home)  # no database yet: nothing made
    assert done.returncode == 1 and b"1 id(s) not found" in done.stdout
    assert not (home / "data").exists() or not list((home / "data").glob("*.db"))
    bad = pushagent("ack", "bad id!", home=home)
    assert bad.returncode == 2 and b"ack: id must be" in bad.stderr
    helptext = pushagent("ack", "--help", home=home).stdout
    assert b"X-Ack: required" in helptext and b"Acknowledge" in helptext
