"""``python -m edge_relay.demo`` (what ``packaging/dev.sh demo`` runs): a relay on localhost,
an agent subscribed to it when the agent's WebSocket transport is installed, and the curl line
for a first message."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from agent.config import default_paths
from agent.errors import EdgepushError
from edge_relay import config
from edge_relay.service import running


def _port(wanted: int) -> int:
    """``wanted`` if nothing listens on it on 127.0.0.1, else any free port.

    SO_REUSEADDR as the relay's own listener has it: a restart within a minute finds the last
    run's connections in TIME_WAIT, which block a plain bind but not a listener (it moved
    off 8080 on 5 of 5 quick restarts without it). A socket that listens still blocks it.
    """
    for port in (wanted, 0):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise EdgepushError("no free port on 127.0.0.1")


def _agent_available() -> bool:
    return all(
        importlib.util.find_spec(m) is not None
        for m in ("agent.transports.ws", "agent.commands.run")
    )


def _start_agent(url: str, topic: str, home: Path) -> subprocess.Popen[bytes] | None:
    """``pushagent run`` against the relay, printing notifications to this terminal."""
    if not _agent_available():
        return None
    cmd = [sys.executable, "-m", "agent", "run", "--server", url, "--topic", topic,
           "--notifier", "log"]  # fmt: skip
    return subprocess.Popen(cmd, env=config.child_env(PUSHAGENT_HOME=str(home)))


async def _subscribed(
    agent: subprocess.Popen[bytes], home: Path, stop: asyncio.Event, timeout: float = 30.0
) -> bool:
    """Wait until the agent reports itself connected (its status file), so the instructions
    printed after it are true: the agent subscribes from the moment it connects, and a
    message curl'd before that (the first second) was never shown to it. The pid must be
    this agent's: a restarted demo finds the last run's file still saying "connected"."""
    status = default_paths({"PUSHAGENT_HOME": str(home)}).status_file
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and agent.poll() is None and not stop.is_set():
        try:
            now = json.loads(status.read_text())
            if now.get("state") == "connected" and now.get("pid") == agent.pid:
                return True
        except (OSError, ValueError, AttributeError):
            pass  # not written yet, or not an object
        await asyncio.sleep(0.05)
    return False


def _pushagent() -> str:
    """How to run this install's ``pushagent``: the script beside this Python (a venv's
    ``bin``), which need not be on PATH, else ``python -m agent``."""
    script = Path(sys.executable).parent / "pushagent"
    if script.is_file():
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m agent"


def _agent_commands(home: Path) -> list[str]:
    """The lines that show the demo agent's data: it lives in its own PUSHAGENT_HOME, so a
    plain ``pushagent history`` looks at (and would create) the user's real one instead."""
    prefix = f"PUSHAGENT_HOME={shlex.quote(str(home.resolve()))} {_pushagent()}"
    return [
        f"The demo's agent keeps its messages under {home.resolve()}; look at them with:",
        f"  {prefix} history",
        f"  {prefix} status",
    ]


def _instructions(url: str, topic: str, agent: Path | None) -> str:
    lines = [
        f"edge-relay demo: a relay is running on {url}",
        "",
        "Push a first message:",
        f'  curl -d "Hello from edgepush" -H "Title: First message" {url}/{topic}',
        "",
        "Subscribe from another terminal:",
        f"  curl -s {url}/{topic}/json",
        "",
        f"Or open {url}/{topic} in a browser: the relay's web app shows it live.",
    ]
    if agent is not None:
        lines += ["", f"A pushagent is subscribed to '{topic}': its notifications print here."]
        lines += _agent_commands(agent)
    else:
        lines += ["", "(pushagent's WebSocket transport is not installed: relay only.)"]
    lines += ["", "Ctrl-C stops the demo."]
    return "\n".join(lines)


async def _run(cfg: config.RelayConfig, topic: str) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    url = f"http://127.0.0.1:{cfg.port}"
    async with running(cfg):
        home = cfg.data_dir / "agent"
        agent = _start_agent(url, topic, home)
        if agent is not None and not await _subscribed(agent, home, stop):
            print("edge-relay demo: the agent has not connected yet (see its log below)")
        print(_instructions(url, topic, home if agent is not None else None), flush=True)
        try:
            await stop.wait()
        finally:
            if agent is not None:
                agent.terminate()
                await asyncio.to_thread(agent.wait, 15)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Start the demo; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m edge_relay.demo", description=__doc__)
    p.add_argument("--port", type=int, default=8080, help="preferred port (default 8080)")
    p.add_argument("--data-dir", type=Path, default=Path(".demo"), help="default ./.demo")
    p.add_argument("--topic", default="demo")
    args = p.parse_args(argv)
    try:
        cfg = config.load(
            {"listen": f"127.0.0.1:{_port(args.port)}", "data_dir": str(args.data_dir),
             "advertise": False},
            env={},
        )  # fmt: skip
        return asyncio.run(_run(cfg, args.topic))
    except EdgepushError as exc:
        print(f"edge-relay demo: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
