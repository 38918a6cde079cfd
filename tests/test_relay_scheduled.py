"""Scheduled delivery on the relay (ntfy's ``X-Delay``/``In``/``At``/``?delay=``/JSON
``delay``): stored at once, invisible until due, delivered once at its time to live
subscribers, ``poll``/``since`` and the upstream — also across a SIGKILL.

Two halves: the hub and its scheduler in-process with an injected clock (no waiting on the
real one: ntfy's 10 s minimum stays for users), and a few real relay processes with 10-20 s
delays (the smallest ntfy allows), their waits run side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import http.client
import json
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.envelope import Message
from agent.store import Store
from edge_relay.core import Filters
from edge_relay.hub import Hub
from edge_relay.live import Subscriber
from tests.helpers import wait_for
from tests.mosquitto import Mosquitto
from tests.relay import Relay, unique_topic
from tests.test_relay_bridge import health, observer, payloads

# --- the hub and its scheduler, with an injected clock ----------------------------------------


def _msg(mid: str, due: int, topic: str = "t") -> Message:
    return Message(id=mid, time=due, topic=topic, message=f"m {mid}")


def _sub(hub: Hub, topic: str = "t") -> Subscriber:
    sub = Subscriber([topic], Filters.parse(None, None), queue_size=5000, on_overflow=lambda: None)
    hub.subscribe(sub)
    return sub


async def _until(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _drain(sub: Subscriber) -> list[str]:
    out = []
    while not sub.queue.empty():
        out.append(sub.queue.get_nowait().stored.message.id)
    return out


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "relay.db") as s:
        yield s


async def test_released_at_due_once_to_live_store_and_outbox(store: Store) -> None:
    now = [1000.0]
    async with Hub(store, forward=lambda m: "up", clock=lambda: now[0]) as hub:
        sub = _sub(hub)
        assert await hub.schedule(_msg("s1", 1030)) is True
        await asyncio.sleep(0.1)
        assert _drain(sub) == [] and store.count() == 0 and store.outbox_len() == 0
        now[0] = 1029.9
        assert hub.scheduler is not None
        hub.scheduler.wake()
        await asyncio.sleep(0.1)
        assert _drain(sub) == []
        now[0] = 1030.0
        hub.scheduler.wake()
        await _until(lambda: not sub.queue.empty())
        assert _drain(sub) == ["s1"]
        assert store.count() == 1 and store.scheduled_count() == 0
        assert [json.loads(i.payload)["id"] for i in store.outbox_peek(10, "message")] == ["s1"]
        now[0] = 5000.0
        hub.scheduler.wake()
        await asyncio.sleep(0.1)
        assert _drain(sub) == [] and store.count() == 1  # never twice


async def test_clock_jump_forward_delivers_without_waiting_the_old_deadline(store: Store) -> None:
    now = [1000.0]
    async with Hub(store, clock=lambda: now[0], schedule_cap=0.05) as hub:
        sub = _sub(hub)
        await hub.schedule(_msg("j1", 1000 + 3 * 3600))
        await asyncio.sleep(0.1)
        assert _drain(sub) == []
        now[0] += 3 * 3600  # NTP fixes the clock: nobody calls wake()
        t0 = time.monotonic()
        await _until(lambda: not sub.queue.empty(), timeout=5)
        assert time.monotonic() - t0 < 2  # the capped sleep re-read the clock
        assert _drain(sub) == ["j1"]


async def test_thousand_for_the_same_second_in_seq_order(store: Store) -> None:
    now = [1000.0]
    async with Hub(store, clock=lambda: now[0]) as hub:
        sub = _sub(hub)
        for i in range(1000):
            await hub.schedule(_msg(f"k{i:04d}", 1010))
        now[0] = 1010.0
        assert hub.scheduler is not None
        hub.scheduler.wake()
        await _until(lambda: store.scheduled_count() == 0)
        await asyncio.sleep(0.05)
        got = []
        while not sub.queue.empty():
            got.append(sub.queue.get_nowait().stored)
        assert sorted(s.message.id for s in got) == [f"k{i:04d}" for i in range(1000)]
        assert [s.seq for s in got] == sorted(s.seq for s in got)
        assert hub.scheduler.released == 1000


async def test_idle_scheduler_does_not_poll(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = store.next_due

    def counted() -> int | None:
        calls.append(1)
        return real()

    monkeypatch.setattr(store, "next_due", counted)
    async with Hub(store, schedule_cap=0.01):
        await asyncio.sleep(0.5)
    assert len(calls) <= 2, len(calls)  # nothing scheduled: it waits on its event only


async def test_a_failing_release_is_logged_restarted_and_delivers_once(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    real = store.release_due
    fired: list[int] = []

    def once(*a: Any, **kw: Any) -> Any:
        if not fired:
            fired.append(1)
            raise RuntimeError("disk gremlin")
        return real(*a, **kw)

    monkeypatch.setattr(store, "release_due", once)
    async with Hub(store, clock=lambda: now[0]) as hub:
        sub = _sub(hub)
        await hub.schedule(_msg("f1", 1000))
        await _until(lambda: not sub.queue.empty(), timeout=10)
        assert _drain(sub) == ["f1"]
        assert hub.scheduler is not None and hub.scheduler.failures == 1
        assert hub.scheduler.running
    errors = [r for r in caplog.records if r.name == "edge_relay.schedule"]
    assert [r.levelno for r in errors] == [logging.ERROR]
    assert "scheduler failed" in errors[0].getMessage() and store.count() == 1


async def test_cancel_through_the_hub(store: Store) -> None:
    now = [1000.0]
    async with Hub(store, clock=lambda: now[0]) as hub:
        sub = _sub(hub)
        await hub.schedule(Message(id="c1", time=1010, topic="t", extra={"sequence_id": "q"}))
        assert await hub.cancel_scheduled("t", "q") == 1
        now[0] = 2000.0
        assert hub.scheduler is not None
        hub.scheduler.wake()
        await asyncio.sleep(0.1)
        assert _drain(sub) == [] and store.count() == 0


# --- real relay processes ----------------------------------------------------------------------


class LiveReader:
    """A ``GET /<topic>/json`` stream read in a thread: each message's id and arrival time."""

    def __init__(self, relay: Relay, topic: str, query: str = "") -> None:
        self.got: list[tuple[str, float, dict[str, Any]]] = []
        self.opened = threading.Event()
        self.conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=60)
        self.conn.request("GET", f"/{topic}/json?{query}")
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert self.opened.wait(10)

    def _read(self) -> None:
        try:
            for line in self.resp:
                ev = json.loads(line)
                if ev["event"] == "open":
                    self.opened.set()
                elif ev["event"] == "message":
                    self.got.append((ev["id"], time.time(), ev))
        except (OSError, ValueError, http.client.HTTPException):
            pass

    def ids(self) -> list[str]:
        return [i for i, _, _ in self.got]

    def close(self) -> None:
        """End the stream: shut the socket so the reader thread sees EOF, then close."""
        if self.conn.sock is not None:
            with contextlib.suppress(OSError):
                self.conn.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(10)
        self.resp.close()
        self.conn.close()


def test_every_form_is_answered_with_its_time_and_delivered_then(tmp_path: Path) -> None:
    relay = Relay(tmp_path / "relay").start()
    t, gone = unique_topic("sched"), unique_topic("gone")
    try:
        live = LiveReader(relay, t)
        goner = LiveReader(relay, gone)  # subscribed, then unsubscribed before the time
        before = int(time.time())
        answers = [
            relay.publish(t, "by X-Delay", **{"X-Delay": "12s"}),
            relay.publish(t, "by In", In="10s"),
            dict(relay.request("POST", f"/{t}?delay=11s", b"by query")[1]),
            dict(relay.request("POST", "/", json.dumps(
                {"topic": t, "message": "by JSON", "delay": "10 seconds"}).encode())[1]),
            relay.publish(gone, "topic gone", At=str(before + 11)),
        ]  # fmt: skip
        after = int(time.time())
        goner.close()
        for a, low in zip(answers, (12, 10, 11, 10, 11), strict=True):
            assert before + low <= a["time"] <= after + low, a  # ntfy: time = delivery time
            assert a["event"] == "message" and a["expires"] > a["time"]
        due = {a["id"]: a["time"] for a in answers}
        mine = [a["id"] for a in answers[:4]]
        # invisible until due: poll, since=, a live stream
        wait_for(lambda: relay.request("GET", "/v1/health")[1]["scheduler"]["next_due"]
                 == min(due.values()), timeout=10, what="health's next_due")  # fmt: skip
        h = relay.request("GET", "/v1/health")[1]["scheduler"]
        assert (h["running"], h["released"], h["failures"]) == (True, 0, 0)
        assert relay.poll(t) == [] and relay.poll(t, "since=all") == []
        assert relay.poll(t, f"since={before - 5}") == []
        assert live.ids() == []
        # ...unless asked for (ntfy's scheduled=1 / sched=1)
        shown = relay.poll(t, "scheduled=1")
        assert sorted(m["id"] for m in shown) == sorted(mine)
        assert [m["id"] for m in relay.poll(gone, "sched=1")] == [answers[4]["id"]]
        wait_for(lambda: len(live.ids()) >= 4, timeout=40, what="scheduled messages live")
        time.sleep(0.5)  # a duplicate would come right behind
        assert Counter(live.ids()) == Counter(mine)
        for mid, at, ev in live.got:
            assert at >= due[mid] - 0.05, (mid, at, due[mid])  # not before its second
            assert ev["time"] == due[mid]
        assert Counter(m["id"] for m in relay.poll(t)) == Counter(mine)
        sched = relay.request("GET", "/v1/health")[1]["scheduler"]
        assert sched["running"] is True and sched["failures"] == 0 and sched["released"] >= 4
        wait_for(lambda: len(relay.poll(gone)) == 1, timeout=20, what="topic-gone delivery")
        assert relay.poll(gone)[0]["message"] == "topic gone"
        assert relay.poll(t, "scheduled=1") == relay.poll(t)  # nothing pending any more
        live.close()
    finally:
        assert relay.stop() == 0
    assert "Traceback" not in relay.log.read_text()


def test_sigkill_between_accept_and_due_delivers_once_everywhere(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """A (due while the relay is down) is delivered late but once at the restart; B (due after
    it) at its time, once, to a live subscriber; both once upstream and in the store, also
    after a second SIGKILL and restart."""
    args = ["--upstream", mosquitto.url, "--forward", "out*"]
    relay = Relay(tmp_path / "relay", args=args).start()
    out = tmp_path / "out.out"
    try:
        wait_for(lambda: health(relay)["upstream"]["state"] == "connected", timeout=20,
                 what="upstream connected")  # fmt: skip
        with observer(mosquitto, "out/#", out, "obs-sched"):
            a = relay.publish("out-s", "A", In="10s")
            b = relay.publish("out-s", "B", In="20s")
            relay.kill()  # accepted (200) = on disk
            wait_for(lambda: time.time() > a["time"] + 1, timeout=30, what="A due while down")
            relay.start()
            live = LiveReader(relay, "out-s")
            try:
                wait_for(lambda: [m["id"] for m in relay.poll("out-s")] == [a["id"]],
                         timeout=20, what="A released late at the restart")  # fmt: skip
                assert time.time() < b["time"], "the restart took too long for this test"
                wait_for(lambda: b["id"] in live.ids(), timeout=30, what="B live at its time")
                # A reaches the stream too when the scheduler's first pass came after the
                # subscribe (the restart's listener opens before it): once, and before B.
                assert live.ids() in ([b["id"]], [a["id"], b["id"]]), live.ids()
            finally:
                live.close()
            wait_for(lambda: len(payloads(out)) >= 2, timeout=30, what="both forwarded")
            relay.kill()
            relay.start()
            wait_for(lambda: health(relay)["scheduler"]["caught_up"] >= 1, timeout=10,
                     what="the scheduler's first pass after the restart")  # fmt: skip
            assert health(relay)["scheduler"]["released"] == 0  # nothing released again
            assert Counter(m["id"] for m in relay.poll("out-s")) == Counter([a["id"], b["id"]])
            wait_for(lambda: health(relay)["upstream"]["outbox"] == 0, timeout=20, what="empty")
            assert Counter(p["id"] for p in payloads(out)) == Counter([a["id"], b["id"]])
    finally:
        assert relay.stop() == 0


def test_python_ntfy_schedule_and_scheduled_poll(tmp_path: Path) -> None:
    """python-ntfy (a third-party client): ``send(schedule=datetime)`` sends ``Delay: <unix>``;
    ``get_cached_messages(scheduled=True)`` sends ``scheduled=True``."""
    from python_ntfy import NtfyClient

    relay = Relay(tmp_path / "relay").start()
    try:
        t = unique_topic("pyntfy")
        client = NtfyClient(topic=t, server=relay.url)
        at = datetime.datetime.now() + datetime.timedelta(seconds=12)
        client.send(message="later, via python-ntfy", schedule=at)
        assert client.get_cached_messages() == []
        pending = client.get_cached_messages(scheduled=True)
        assert [(m["message"], m["time"]) for m in pending] == [
            ("later, via python-ntfy", int(at.timestamp()))
        ]
        wait_for(lambda: len(client.get_cached_messages()) == 1, timeout=40,
                 what="scheduled message delivered")  # fmt: skip
        (got,) = client.get_cached_messages()
        assert (got["id"], got["time"]) == (pending[0]["id"], pending[0]["time"])
        assert client.get_cached_messages(scheduled=True) == [got]  # nothing pending, no repeat
    finally:
        assert relay.stop() == 0


async def test_a_sealed_scheduled_message_is_stored_sealed_and_its_echo_is_a_no_op(
    store: Store,
) -> None:
    """An end-to-end encrypted message scheduled on the relay is marked encrypted when it is
    released, as a published one is (Hub._insert's ``encrypted=``): the upstream bridge's echo
    of the forwarded copy (the same id, sealed) is the usual no-op, not kept in ``rejected``
    as 'arrived encrypted but is in clear'; a clear copy of the id is kept aside."""
    from agent.e2e import keys, seal
    from agent.envelope import from_fields

    key = bytes(range(32))
    inner = from_fields({"id": "e1", "message": "Door opened", "time": 1030}, topic="t")
    sealed = from_fields(seal.seal(inner, key, keys.kid_of(key)))
    now, counted = [1000.0], list[int]()
    async with Hub(store, forward=lambda m: "up", clock=lambda: now[0],
                   on_rejected=counted.append) as hub:  # fmt: skip
        sub = _sub(hub)
        assert await hub.schedule(sealed) is True
        now[0] = 1030.0
        assert hub.scheduler is not None
        hub.scheduler.wake()
        await _until(lambda: not sub.queue.empty())
        assert _drain(sub) == ["e1"]
        assert store.e2e_of("e1") == ("jwe", None)
        assert await hub.publish([sealed], source="upstream") == []  # the echo: a no-op
        assert store.rejected_count() == 0 and counted == []
        clear = from_fields({"id": "e1", "message": "Injected in clear"}, topic="t")
        assert await hub.publish([clear], source="upstream") == []
    reasons = [r.reason for _, r in store.rejected_list()]
    assert len(reasons) == 1 and reasons[0].startswith("id e1 arrived in clear but is encrypted")
    assert counted == [1] and _drain(sub) == []


async def test_a_scheduled_copy_of_an_id_stored_meanwhile_in_the_other_form_is_kept_aside(
    store: Store,
) -> None:
    """A sealed message scheduled, then the same id stored in clear before its time (the
    bridge, a publisher's own id): at the release the clear one stays (the first form) and
    the sealed one goes to ``rejected`` with the reason, counted, not dropped unseen."""
    from agent.e2e import keys, seal
    from agent.envelope import from_fields

    key = bytes(range(32))
    inner = from_fields({"id": "e2", "message": "Door opened", "time": 1030}, topic="t")
    sealed = from_fields(seal.seal(inner, key, keys.kid_of(key)))
    now, counted = [1000.0], list[int]()
    async with Hub(store, clock=lambda: now[0], on_rejected=counted.append) as hub:
        sub = _sub(hub)
        assert await hub.schedule(sealed) is True
        clear = from_fields({"id": "e2", "message": "Injected in clear"}, topic="t")
        assert [s.message.id for s in await hub.publish([clear], source="upstream")] == ["e2"]
        assert _drain(sub) == ["e2"]
        now[0] = 1030.0
        assert hub.scheduler is not None
        hub.scheduler.wake()
        await _until(lambda: store.scheduled_count() == 0)
        await _until(lambda: counted == [1])
        assert _drain(sub) == []
    reasons = [r.reason for _, r in store.rejected_list()]
    assert len(reasons) == 1 and reasons[0].startswith("id e2 arrived encrypted but is in clear")
    stored = store.get("e2")
    assert stored is not None and stored.message.message == "Injected in clear"
