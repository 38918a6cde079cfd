"""ntfy's scheduled-delivery parser (``agent.ntfyproto.delay``) against ntfy's documentation
(docs.ntfy.sh/publish/#scheduled-delivery) and its server's own tests (``util/time_test.go``).

Pure: no relay, no event loop. Where the documentation and the server disagree the server
wins (noted on the row).
"""

from __future__ import annotations

import datetime as dt

import pytest

from agent.ntfyproto import NtfyError
from agent.ntfyproto.delay import MAX_DELAY, MIN_DELAY, parse_delay, parse_future_time

EST = dt.timezone(dt.timedelta(hours=-5))
UTC = dt.UTC
# docs.ntfy.sh: "assuming today's date is 12/10/2021, 9am, Eastern Time Zone"
DOCS_NOW = dt.datetime(2021, 12, 10, 9, 0, 0, tzinfo=EST).timestamp()
# ntfy's util/time_test.go: 2021-12-10 10:17:23 UTC, a Friday
GO_NOW = dt.datetime(2021, 12, 10, 10, 17, 23, tzinfo=UTC).timestamp()


def _est(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=EST).timestamp())


def _utc(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=UTC).timestamp())


@pytest.mark.parametrize(
    ("text", "due"),
    [
        ("30m", _est(2021, 12, 10, 9, 30)),
        # The docs' table says 11:30am for "2 hours" from 9am; the server adds 2 h: 11am.
        ("2 hours", _est(2021, 12, 10, 11, 0)),
        ("1 day", _est(2021, 12, 11, 9, 0)),
        ("10am", _est(2021, 12, 10, 10, 0)),
        ("8am", _est(2021, 12, 11, 8, 0)),
        ("1639152000", _est(2021, 12, 10, 11, 0)),
        # the docs' curl examples and prose
        ("tomorrow, 10am", _est(2021, 12, 11, 10, 0)),
        ("30min", _est(2021, 12, 10, 9, 30)),
        ("3h", _est(2021, 12, 10, 12, 0)),
        ("2 days", _est(2021, 12, 12, 9, 0)),
        ("8:30pm", _est(2021, 12, 10, 20, 30)),
        ("tomorrow, 3pm", _est(2021, 12, 11, 15, 0)),
        ("Tuesday, 7am", _est(2021, 12, 14, 7, 0)),  # 12/10/2021 is a Friday
        ("1639194738", 1639194738),
    ],
)
def test_docs_examples(text: str, due: int) -> None:
    assert parse_future_time(text, DOCS_NOW, tz=EST) == due
    if due - DOCS_NOW <= MAX_DELAY:
        assert parse_delay(text, DOCS_NOW, tz=EST) == due


@pytest.mark.parametrize(
    ("text", "due"),
    [
        ("11am", _utc(2021, 12, 10, 11, 0, 0)),  # same day
        ("9am", _utc(2021, 12, 11, 9, 0, 0)),  # already past: the next day
        ("Monday, 10:30pm", _utc(2021, 12, 13, 22, 30, 0)),
        ("30m", _utc(2021, 12, 10, 10, 47, 23)),
        ("30min", _utc(2021, 12, 10, 10, 47, 23)),
        ("3h", _utc(2021, 12, 10, 13, 17, 23)),
        ("1 day", _utc(2021, 12, 11, 10, 17, 23)),
        ("1639183911", _utc(2021, 12, 11, 0, 51, 51)),
        ("2d", _utc(2021, 12, 12, 10, 17, 23)),
    ],
)
def test_ntfy_server_tests(text: str, due: int) -> None:
    assert parse_future_time(text, GO_NOW, tz=UTC) == due


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        ("10s", 10),
        ("  10s  ", 10),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("90s", 90),
        ("10 seconds", 10),
        ("5 mins", 300),
        ("1 minute", 60),
        ("2 Hours", 7200),
        ("1D", 86400),
        ("3d", 3 * 86400),
        ("10 secs", 10),
        ("tomorrow", 86400),  # a day alone keeps the time of day (olebedev/when)
    ],
)
def test_durations(text: str, offset: int) -> None:
    assert parse_delay(text, GO_NOW, tz=UTC) == int(GO_NOW) + offset


@pytest.mark.parametrize(
    ("text", "due"),
    [
        ("10:30", _utc(2021, 12, 10, 10, 30)),
        ("10:15", _utc(2021, 12, 11, 10, 15)),  # past today: tomorrow
        ("17:15:30", _utc(2021, 12, 10, 17, 15, 30)),
        ("noon", _utc(2021, 12, 10, 12, 0)),
        ("midnight", _utc(2021, 12, 11, 0, 0)),
        ("tonight", _utc(2021, 12, 10, 23, 0)),
        ("tomorrow at 9am", _utc(2021, 12, 11, 9, 0)),
        ("next friday", _utc(2021, 12, 17, 10, 17, 23)),  # today is Friday: a week ahead
        ("on sat 8 pm", _utc(2021, 12, 11, 20, 0)),
        ("today 6pm", _utc(2021, 12, 10, 18, 0)),
    ],
)
def test_natural_subset(text: str, due: int) -> None:
    assert parse_future_time(text, GO_NOW, tz=UTC) == due


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("garbage", 40004),
        ("", 40004),
        ("yesterday", 40004),
        ("13pm", 40004),
        ("25:00", 40004),
        ("1639000000", 40004),  # a unix time in the past reads as nothing
        ("10 fortnights", 40004),
        ("-", 40004),
        ("9s", 40005),
        ("5s", 40005),
        ("0", 40005),
        ("-1h", 40005),
        ("1s", 40005),
        ("72h1s", 40006),
        ("3d1s", 40004),
        ("4d", 40006),
        ("73h", 40006),
        ("9999999999", 40006),
    ],
)
def test_refused_with_ntfy_codes(text: str, code: int) -> None:
    with pytest.raises(NtfyError) as err:
        parse_delay(text, GO_NOW, tz=UTC)
    assert err.value.code == code
    assert err.value.http == 400


def test_limits_are_ntfys_and_max_is_configurable() -> None:
    assert (MIN_DELAY, MAX_DELAY) == (10, 3 * 86400)
    assert parse_delay("3d", GO_NOW) == int(GO_NOW) + MAX_DELAY
    assert parse_delay("5d", GO_NOW, max_delay=7 * 86400) == int(GO_NOW) + 5 * 86400
    with pytest.raises(NtfyError) as err:
        parse_delay("2h", GO_NOW, max_delay=3600)
    assert err.value.code == 40006
