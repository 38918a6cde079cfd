"""Plain helpers for tests: free ports, waiting on a condition with a deadline, CLI runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now, and never one this process handed out before: the kernel may give
    the same ephemeral port to two binds in a row once the first socket is closed, and a
    NATS cluster's nine ports asked in a row got one twice (a node died at its bind, CI)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def complete_lines(data: bytes) -> list[bytes]:
    """The lines of a file another process is still appending to, up to its last newline.

    A reader polling an agent's ``--notifier log`` output can see one of its writes half
    done: CI read '{"id":"W8lIG7mIiTbP' mid-backlog and the test failed on the JSON. What
    follows the last newline is a write in progress (the notifier writes whole lines)."""
    return data[: data.rfind(b"\n") + 1].splitlines()


def wait_for(
    condition: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def child_env(home: Path | None = None, **extra: str) -> dict[str, str]:
    """An environment for agent/relay subprocesses that runs this checkout's code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHAGENT_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    if home is not None:
        env["PUSHAGENT_HOME"] = str(home)
    env.update(extra)
    return env


def pushagent(
    *args: str,
    home: Path,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``pushagent ARGS`` (this checkout) to completion."""
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        env={**child_env(home), **(env or {})},
        input=input,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def spawn(
    module: str, args: Sequence[str], *, env: Mapping[str, str], **kw: object
) -> subprocess.Popen[bytes]:
    """Start ``python -m module ARGS`` in the background (stdout and stderr piped)."""
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", module, *args],
        env=dict(env),
        stdout=kw.pop("stdout", subprocess.PIPE),
        stderr=kw.pop("stderr", subprocess.PIPE),
        **kw,
    )
