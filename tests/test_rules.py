"""The pure rules module: table-driven, no event loop, no clock."""

from __future__ import annotations

import pytest

from agent import rules
from agent.rules import Gate, Item, Policy, TopicRule

H = 60  # minutes per hour


@pytest.mark.parametrize(
    ("window", "minute", "quiet"),
    [
        ("22:00-07:00", 21 * H + 59, False),
        ("22:00-07:00", 22 * H, True),
        ("22:00-07:00", 23 * H + 59, True),
        ("22:00-07:00", 0, True),
        ("22:00-07:00", 6 * H + 59, True),
        ("22:00-07:00", 7 * H, False),
        ("22:00-07:00", 12 * H, False),
        ("09:00-17:30", 8 * H + 59, False),
        ("09:00-17:30", 9 * H, True),
        ("09:00-17:30", 17 * H + 29, True),
        ("09:00-17:30", 17 * H + 30, False),
        ("00:00-00:00", 12 * H, False),
    ],
)
def test_quiet_hours_window(window: str, minute: int, quiet: bool) -> None:
    assert rules.in_quiet_hours(rules.parse_hhmm_range(window), minute) is quiet


@pytest.mark.parametrize("bad", ["22:00", "25:00-07:00", "22:00-07:61", "ab:cd-07:00"])
def test_bad_quiet_hours_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="quiet hours"):
        rules.parse_hhmm_range(bad)


RULES = (
    TopicRule("alerts/*", min_priority=3),
    TopicRule("alerts/backup", min_priority=4),
    TopicRule("spam*", mute=True),
)


@pytest.mark.parametrize(
    ("topic", "priority", "minute", "strict", "paused", "verdict"),
    [
        ("home", 3, 12 * H, False, None, rules.SHOW),
        ("alerts/disk", 2, 12 * H, False, None, rules.LOW_PRIORITY),
        ("alerts/disk", 3, 12 * H, False, None, rules.SHOW),
        ("alerts/backup", 3, 12 * H, False, None, rules.LOW_PRIORITY),  # strictest floor
        ("alerts/backup", 4, 12 * H, False, None, rules.SHOW),
        ("spam", 5, 12 * H, False, None, rules.MUTED),
        ("spammy/x", 1, 12 * H, False, None, rules.MUTED),
        ("home", 4, 23 * H, False, None, rules.QUIET),
        ("home", 5, 23 * H, False, None, rules.SHOW),  # urgent gets through quiet hours
        ("home", 5, 2 * H, True, None, rules.QUIET),  # unless strict
        ("home", 3, 7 * H, False, None, rules.SHOW),
        ("home", 5, 12 * H, False, 1000.0, rules.PAUSED),
        ("home", 5, 12 * H, False, 99.0, rules.SHOW),  # pause already over at now=100
        ("spam", 1, 23 * H, False, 1000.0, rules.PAUSED),  # pause is checked first
    ],
)
def test_verdicts(
    topic: str, priority: int, minute: int, strict: bool, paused: float | None, verdict: str
) -> None:
    policy = Policy(rules=RULES, quiet_hours=(22 * H, 7 * H), quiet_hours_strict=strict)
    decision = Gate(policy).decide(
        [Item("m1", topic, priority)], now=100.0, minute=minute, paused_until=paused
    )
    assert decision.verdicts == (("m1", verdict),)
    assert decision.summaries == ()


def _batch(topic: str, n: int, start: int = 0) -> list[Item]:
    return [Item(f"{topic}-{i}", topic, 3) for i in range(start, start + n)]


def test_burst_folds_beyond_count_into_one_summary() -> None:
    gate = Gate(Policy(burst_count=3, burst_seconds=10.0))
    d = gate.decide(_batch("a", 10) + _batch("b", 2), now=0.0, minute=0)
    assert d.shown == ["a-0", "a-1", "a-2", "b-0", "b-1"]
    assert [v for _, v in d.verdicts].count(rules.BURST) == 7
    assert d.summaries == (rules.Summary("a", 7),)
    assert d.summaries[0].text == "7 new messages in a"


def test_burst_summaries_at_most_one_per_window_then_flushed() -> None:
    gate = Gate(Policy(burst_count=2, burst_seconds=10.0))
    first = gate.decide(_batch("a", 5), now=0.0, minute=0)
    assert first.summaries == (rules.Summary("a", 3),)
    later = gate.decide(_batch("a", 4, 5), now=3.0, minute=0)  # window still full
    assert later.shown == [] and later.summaries == ()
    assert gate.pending == {"a": 4}
    assert gate.next_flush() == 10.0
    assert gate.flush(now=9.9) == ()
    assert gate.flush(now=10.0) == (rules.Summary("a", 4),)
    assert gate.pending == {} and gate.next_flush() is None


@pytest.mark.parametrize(
    ("times", "shown"),
    [
        ([0, 1, 2, 3], 2),  # 2 per 10 s
        ([0, 1, 11, 12], 4),  # the window slid
        ([0, 10, 20, 30], 4),  # exactly one window apart
    ],
)
def test_burst_window_slides(times: list[int], shown: int) -> None:
    gate = Gate(Policy(burst_count=2, burst_seconds=10.0))
    total = 0
    for i, t in enumerate(times):
        total += len(gate.decide([Item(str(i), "a", 3)], now=float(t), minute=0).shown)
    assert total == shown


def test_storm_of_ten_thousand_gives_a_handful() -> None:
    gate = Gate(Policy())
    on_screen = 0
    for batch in range(10):
        d = gate.decide(_batch("storm", 1000, batch * 1000), now=batch * 0.1, minute=0)
        on_screen += len(d.shown) + len(d.summaries)
    on_screen += len(gate.flush(now=100.0))
    assert on_screen == rules.DEFAULT_BURST[0] + 2
    assert gate.pending == {}


def test_suppressed_messages_do_not_count_towards_burst() -> None:
    gate = Gate(Policy(rules=(TopicRule("a", min_priority=4),), burst_count=1))
    d = gate.decide(
        [Item("low", "a", 1), Item("high", "a", 4), Item("high2", "a", 5)], now=0, minute=0
    )
    assert d.verdicts == (("low", rules.LOW_PRIORITY), ("high", rules.SHOW), ("high2", "burst"))


def test_no_burst_folding_when_switched_off() -> None:
    gate = Gate(Policy(burst_count=None))
    d = gate.decide(_batch("a", 500), now=0.0, minute=0)
    assert len(d.shown) == 500 and d.summaries == () and gate.pending == {}
