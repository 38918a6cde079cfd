"""Rules and desktop options from a config file, through ``make_notifier``."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import config, rules
from agent.errors import ConfigError
from agent.notify import LogNotifier, NullNotifier, make_notifier
from agent.notify.command import CommandNotifier
from agent.notify.desktop import DesktopNotifier
from agent.notify.gate import RulesNotifier, policy_from
from agent.notify.text import clean, urgency_name

CONFIG = """
notifier = "desktop"
quiet_hours = "22:30-06:15"
quiet_hours_strict = true
burst = { count = 4, seconds = 30 }

[[rules]]
topic = "ci/*"
min_priority = 4

[[rules]]
topic = "spam"
mute = true

[desktop]
opener = ["firefox", "--new-tab"]
max_body = 500
"""


def _load(tmp_path: Path, text: str, **flags: object) -> config.AgentConfig:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return config.load(flags, config_file=path, env={"PUSHAGENT_HOME": str(tmp_path)})


def test_rules_from_config(tmp_path: Path) -> None:
    cfg = _load(tmp_path, CONFIG)
    assert policy_from(cfg) == rules.Policy(
        rules=(rules.TopicRule("ci/*", 4, False), rules.TopicRule("spam", 1, True)),
        quiet_hours=(22 * 60 + 30, 6 * 60 + 15),
        quiet_hours_strict=True,
        burst_count=4,
        burst_seconds=30.0,
    )
    assert cfg.desktop.opener == ("firefox", "--new-tab") and cfg.desktop.max_body == 500
    n = make_notifier(cfg, lambda i, s: None)
    assert isinstance(n, RulesNotifier) and isinstance(n.backend, DesktopNotifier)
    assert policy_from(_load(tmp_path, "")).burst_count == rules.DEFAULT_BURST[0]
    assert policy_from(_load(tmp_path, ""), storm_guard=False).burst_count is None


@pytest.mark.parametrize(
    ("notifier", "backend", "burst"),
    [("desktop", DesktopNotifier, rules.DEFAULT_BURST[0]), ("command", CommandNotifier, None)],
)
def test_backends_behind_rules(
    tmp_path: Path, notifier: str, backend: type, burst: int | None
) -> None:
    extra = '[command]\nargv = ["true"]\n' if notifier == "command" else ""
    n = make_notifier(_load(tmp_path, extra, notifier=notifier), lambda i, s: None)
    assert isinstance(n, RulesNotifier) and isinstance(n.backend, backend)
    assert n.gate.policy.burst_count == burst


def test_log_and_none_print_every_message_without_rules(tmp_path: Path) -> None:
    # "log" is the stream of every handed-over message (the delivery tests count on it)
    log_cfg = _load(tmp_path, CONFIG, notifier="log")  # rules configured, still every line
    assert isinstance(make_notifier(log_cfg, print), LogNotifier)
    assert isinstance(make_notifier(_load(tmp_path, "", notifier="none"), print), NullNotifier)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[desktop]\nmax_body = 5\n", "desktop.max_body"),
        ("[desktop]\nopener = 3\n", "desktop.opener"),
        ('quiet_hours = "22-7"\n', "quiet_hours"),
        ("[[rules]]\ntopic = 'a'\nmin_priority = 9\n", "rules.min_priority"),
        ("burst = { count = 0, seconds = 1 }\n", "burst"),
    ],
)
def test_bad_values_named(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error.replace(".", r"\.")):
        _load(tmp_path, text)


@pytest.mark.parametrize(("priority", "urgency"), [(1, "low"), (2, "low"), (3, "normal"),
                                                    (4, "critical"), (5, "critical")])  # fmt: skip
def test_urgency(priority: int, urgency: str) -> None:
    assert urgency_name(priority) == urgency


@pytest.mark.parametrize(
    ("text", "markup", "shown"),
    [
        ("<b>x</b> & y", True, "&lt;b&gt;x&lt;/b&gt; &amp; y"),
        ("<b>x</b>", False, "<b>x</b>"),
        ("a\x00b\x1b[2Jc\x7f\u202ed\nline", True, "ab[2Jcd\nline"),
        ("x" * 50, False, "x" * 19 + "…"),
    ],
)
def test_clean(text: str, markup: bool, shown: str) -> None:
    assert clean(text, 20, markup=markup) == shown


def test_title_is_one_line() -> None:
    assert clean("a\nb\tc", 20, markup=False, oneline=True) == "a b c"
