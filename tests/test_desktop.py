"""The desktop backend and the rules layer against a real dunst on a real D-Bus bus (Xvfb).

These run in-process: the backend talks to the bus named by DBUS_SESSION_BUS_ADDRESS, which
the ``desktop`` fixture (tests/desktop.py) provides.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import dnd, rules
from agent.config import DesktopConfig
from agent.notify.desktop import DesktopNotifier
from agent.notify.gate import RulesNotifier
from agent.store import Store
from tests.desktop import Desktop
from tests.notifyhelp import RECEIPTS, Recorder, msg, open_store, stored, until

pytestmark = pytest.mark.desktop
NOON = 12 * 60


@pytest.fixture
def session(desktop: Desktop, monkeypatch: pytest.MonkeyPatch) -> Desktop:
    for key, value in desktop.env.items():
        monkeypatch.setenv(key, value)
    return desktop


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(tmp_path)
    try:
        yield s
    finally:
        s.close()


def opener(tmp_path: Path) -> tuple[tuple[str, ...], Path]:
    """An opener argv that appends the URL to a file (instead of starting a browser)."""
    out = tmp_path / "opened.txt"
    code = "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')"
    return (sys.executable, "-c", code, str(out)), out


def gated(store: Store, rec: Recorder, policy: rules.Policy, **kw: object) -> RulesNotifier:
    cfg = DesktopConfig(opener=kw.pop("opener", ()))  # type: ignore[arg-type]
    minute = kw.pop("minute", NOON)
    clock = kw.pop("clock", None)
    extra = {"clock": clock} if clock else {}
    return RulesNotifier(
        DesktopNotifier(cfg, rec), policy, store, minute=lambda now: minute, **extra
    )  # type: ignore[arg-type]


def on_screen(d: Desktop) -> int:
    return d.count("displayed") + d.count("waiting")


async def test_title_body_urgency_and_safe_content(
    session: Desktop, store: Store, tmp_path: Path
) -> None:
    rec = Recorder(store)
    huge = "A" * 1_000_000
    items = stored(
        store,
        msg(title="low", message="p1 body", priority=1),
        msg(title="normal", message="p3 body", priority=3),
        msg(title="urgent", message="p5 body", priority=5),
        msg(
            title="<b>evil</b>\x1b[31m\x07",
            message="<a href='x'>click</a> & \x00more\u202e",
            priority=4,
        ),
        msg(title="big", message=huge, priority=2),
    )
    async with gated(store, rec, rules.Policy()) as n:
        await n.show(items)
        await until(lambda: len(rec.states("displayed")) == 5, timeout=20, what="5 displayed")
    await until(lambda: len(session.urgencies()) == 5, timeout=20, what="dunst saw 5")
    assert sorted(session.urgencies().values()) == sorted(
        ["LOW", "NORMAL", "CRITICAL", "CRITICAL", "LOW"]
    )
    session.dunstctl("close-all")
    history = {
        h["summary"]: h
        for h in await until(lambda: len(session.history()) == 5 and session.history(), timeout=20)
    }
    by_id = session.urgencies()
    assert by_id[history["low"]["id"]] == "LOW"
    assert by_id[history["normal"]["id"]] == "NORMAL"
    assert by_id[history["urgent"]["id"]] == "CRITICAL"
    assert history["normal"]["body"] == "p3 body"
    # markup escaped (dunst supports body-markup), control characters and bidi overrides gone
    evil = history["<b>evil</b>[31m"]
    assert evil["body"] == "&lt;a href='x'&gt;click&lt;/a&gt; &amp; more"
    assert "click</a>" not in evil["message"]
    assert len(history["big"]["body"]) == DesktopConfig().max_body
    assert history["big"]["body"].endswith("…")
    # shown truncated, stored whole
    assert store.get(items[4].message.id).message.message == huge  # type: ignore[union-attr]
    assert all(store.get(i.message.id).state == "displayed" for i in items)  # type: ignore[union-attr]
    session.screenshot(tmp_path / "notification.png")


async def test_click_opens_url_and_close_dismisses(
    session: Desktop, store: Store, tmp_path: Path
) -> None:
    rec = Recorder(store)
    argv, opened = opener(tmp_path)
    clicked, closed = stored(
        store,
        msg(title="click me", click="https://example.org/x?a=1"),
        msg(title="close me"),
    )
    async with gated(store, rec, rules.Policy(), opener=argv) as n:
        await n.show([clicked])
        await until(lambda: session.count("displayed") == 1, timeout=20, what="shown")
        session.screenshot(tmp_path / "notification.png")
        session.dunstctl("action", "0")
        await until(lambda: rec.states("clicked"), timeout=20, what="clicked event")
        await until(opened.exists, timeout=20, what="opener ran")
        session.dunstctl("close-all")  # dunst may keep a clicked notification on screen
        await until(lambda: session.count("displayed") == 0, timeout=20, what="screen clear")
        await n.show([closed])
        await until(lambda: len(rec.states("displayed")) == 2, timeout=20, what="2nd shown")
        await until(lambda: session.count("displayed") >= 1, timeout=20, what="2nd on screen")
        session.dunstctl("close")
        await until(lambda: rec.states("dismissed"), timeout=20, what="dismissed event")
    assert opened.read_text() == "https://example.org/x?a=1\n"
    assert rec.states("clicked") == [clicked.message.id]
    assert rec.states("dismissed") == [closed.message.id]
    assert store.get(clicked.message.id).state == "clicked"  # type: ignore[union-attr]
    assert store.get(closed.message.id).state == "dismissed"  # type: ignore[union-attr]
    queued = [json.loads(o.payload) for o in store.outbox_peek(100, kind="receipt")]
    assert {(r["id"], r["state"]) for r in queued} >= {
        (clicked.message.id, "clicked"),
        (closed.message.id, "dismissed"),
    }
    assert all(o.destination == RECEIPTS for o in store.outbox_peek(100))


@pytest.mark.parametrize(
    ("policy", "minute", "paused", "expect_shown"),
    [
        (
            rules.Policy(rules=(rules.TopicRule("noisy/*", mute=True),)),
            NOON,
            False,
            ["calm", "urgent"],
        ),
        (rules.Policy(rules=(rules.TopicRule("*", min_priority=4),)), NOON, False, ["urgent"]),
        (rules.Policy(quiet_hours=(22 * 60, 7 * 60)), 23 * 60, False, ["urgent"]),
        (rules.Policy(quiet_hours=(22 * 60, 7 * 60), quiet_hours_strict=True), 60, False, []),
        (rules.Policy(), NOON, True, []),
    ],
    ids=["mute", "min_priority", "quiet_hours", "quiet_hours_strict", "pause"],
)
async def test_each_rule_through_dunst(
    session: Desktop,
    store: Store,
    policy: rules.Policy,
    minute: int,
    paused: bool,
    expect_shown: list[str],
) -> None:
    rec = Recorder(store)
    items = stored(
        store,
        msg(topic="noisy/a", title="noisy", priority=3),
        msg(topic="calm", title="calm", priority=3),
        msg(topic="calm", title="urgent", priority=5),
    )
    if paused:
        dnd.pause(store, until=2e9)
    expected_ids = [i.message.id for i in items if i.message.title in expect_shown]
    async with gated(store, rec, policy, minute=minute) as n:
        await n.show(items)
        await until(lambda: len(rec.states("displayed")) >= len(expected_ids), timeout=20)
    assert sorted(rec.states("displayed")) == sorted(expected_ids)
    assert session.count("displayed") == len(expected_ids)
    # held-back messages are stored and in history, just not shown
    assert store.count() == 3
    assert all(store.get(i.message.id) is not None for i in items)


async def test_burst_summary_through_dunst(session: Desktop, store: Store) -> None:
    rec = Recorder(store)
    items = stored(store, *[msg(topic="ci", title=f"build {i}") for i in range(8)])
    async with gated(store, rec, rules.Policy(burst_count=3, burst_seconds=60.0)) as n:
        await n.show(items)
        await until(lambda: session.count("displayed") == 4, timeout=20, what="3 + summary")
    session.dunstctl("close-all")
    bodies = [
        h["body"]
        for h in await until(lambda: len(session.history()) == 4 and session.history(), timeout=20)
    ]
    assert "5 new messages in ci" in bodies
    assert len(rec.states("displayed")) == 3  # the summary is not a stored message


async def test_storm_of_ten_thousand(session: Desktop, store: Store) -> None:
    rec = Recorder(store)
    clock = [1000.0]
    async with gated(store, rec, rules.Policy(), clock=lambda: clock[0]) as n:
        for b in range(10):
            batch = stored(store, *[msg(topic="storm", message=f"{b}-{i}") for i in range(1000)])
            await n.show(batch)
            clock[0] += 0.1
        await until(lambda: len(rec.states("displayed")) == rules.DEFAULT_BURST[0], timeout=30)
        clock[0] += 60  # the held summary becomes due
        await until(lambda: on_screen(session) == rules.DEFAULT_BURST[0] + 2, timeout=30)
    assert store.count() == 10_000
    assert on_screen(session) <= 12


async def test_no_daemon_falls_back_to_log(
    bare_desktop: Desktop,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    for key, value in bare_desktop.env.items():
        monkeypatch.setenv(key, value)
    rec = Recorder(store)
    items = stored(store, msg(title="one"), msg(title="two"))
    with caplog.at_level(logging.WARNING):
        async with gated(store, rec, rules.Policy()) as n:
            await n.show(items[:1])
            await n.show(items[1:])
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1
    out = capfd.readouterr().out
    assert [json.loads(line)["id"] for line in out.splitlines()] == [i.message.id for i in items]
    assert rec.events == []
    assert store.count() == 2


async def test_no_bus_no_display_falls_back_to_log(
    store: Store, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/nonexistent")
    rec = Recorder(store)
    (item,) = stored(store, msg(title="headless"))
    async with gated(store, rec, rules.Policy()) as n:
        await n.show([item])
    assert json.loads(capfd.readouterr().out)["id"] == item.message.id
    assert rec.events == []
