"""The ``command`` backend: real child processes, a bounded pool, timeouts, no shell."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import CommandConfig
from agent.errors import ConfigError
from agent.notify.command import CommandNotifier
from agent.store import Store
from tests.notifyhelp import Recorder, msg, open_store, stored, until

HOOK = """
import json, os, sys, time
out = sys.argv[1]
env = {k: v for k, v in os.environ.items() if k.startswith("PUSHAGENT_")}
envelope = json.loads(sys.stdin.read())
if env["PUSHAGENT_TITLE"] == "slow":
    time.sleep(5)
with open(os.path.join(out, env["PUSHAGENT_ID"]), "w") as f:
    json.dump({"env": env, "stdin": envelope, "done": time.monotonic()}, f)
"""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(tmp_path)
    try:
        yield s
    finally:
        s.close()


def hook(tmp_path: Path) -> tuple[tuple[str, ...], Path]:
    script, out = tmp_path / "hook.py", tmp_path / "out"
    script.write_text(HOOK)
    out.mkdir()
    return (sys.executable, str(script), str(out)), out


async def test_slow_command_does_not_delay_the_next(store: Store, tmp_path: Path) -> None:
    argv, out = hook(tmp_path)
    rec = Recorder(store)
    slow, fast = stored(
        store,
        msg(title="slow"),
        msg(
            topic="alerts/disk",
            title="fast $(touch pwned)",
            message="line1\nline2 `id`",
            priority=5,
            tags=("warning", "disk"),
            click="https://example.org/d",
        ),
    )
    async with CommandNotifier(CommandConfig(argv=argv, workers=2, timeout=30), rec) as n:
        start = time.monotonic()
        await n.show([slow, fast])
        await until(lambda: (out / fast.message.id).exists(), timeout=20, what="fast command")
        fast_done = time.monotonic() - start
        assert not (out / slow.message.id).exists()  # still sleeping
        await until(lambda: (out / slow.message.id).exists(), timeout=30, what="slow command")
        await until(lambda: len(rec.states("displayed")) == 2, timeout=10)
    assert fast_done < 4.5, f"the fast command waited {fast_done:.1f}s behind the slow one"
    got = json.loads((out / fast.message.id).read_text())
    assert got["env"] == {
        "PUSHAGENT_ID": fast.message.id,
        "PUSHAGENT_TOPIC": "alerts/disk",
        "PUSHAGENT_TITLE": "fast $(touch pwned)",
        "PUSHAGENT_MESSAGE": "line1\nline2 `id`",
        "PUSHAGENT_PRIORITY": "5",
        "PUSHAGENT_TAGS": "warning,disk",
        "PUSHAGENT_CLICK": "https://example.org/d",
        "PUSHAGENT_EVENT": "message",
        "PUSHAGENT_SEQUENCE_ID": fast.message.id,  # no sequence_id: its own sequence
    }
    assert got["stdin"]["id"] == fast.message.id and got["stdin"]["tags"] == ["warning", "disk"]
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()  # no shell
    assert rec.states("displayed") == [fast.message.id, slow.message.id]


async def test_timeout_kills_and_is_not_displayed(store: Store, tmp_path: Path) -> None:
    argv, out = hook(tmp_path)
    rec = Recorder(store)
    slow, ok = stored(store, msg(title="slow"), msg(title="ok"))
    async with CommandNotifier(CommandConfig(argv=argv, workers=1, timeout=1.0), rec) as n:
        await n.show([slow, ok])
        await until(lambda: (out / ok.message.id).exists(), timeout=20, what="next command")
        await until(lambda: rec.events, timeout=20, what="displayed event")
    assert not (out / slow.message.id).exists()
    assert rec.events == [(ok.message.id, "displayed")]


async def test_shell_only_when_asked(store: Store, tmp_path: Path) -> None:
    rec = Recorder(store)
    target = tmp_path / "shell.txt"
    cfg = CommandConfig(argv=(f'echo "$PUSHAGENT_TOPIC" > {target}',), shell=True)
    (item,) = stored(store, msg(topic="via/shell"))
    async with CommandNotifier(cfg, rec) as n:
        await n.show([item])
        await until(lambda: rec.events, timeout=20)
    assert target.read_text() == "via/shell\n"


def test_missing_argv_is_a_config_error(store: Store) -> None:
    with pytest.raises(ConfigError, match=r"command\.argv"):
        CommandNotifier(CommandConfig(), Recorder(store))
