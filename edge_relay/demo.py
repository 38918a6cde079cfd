"""``python -m edge_relay.demo`` (what ``packaging/dev.sh demo`` runs): a relay on localhost,
an agent subscribed to it when the agent's WebSocket transport is installed, and the curl line
for a first message."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from agent.errors import EdgepushError
from edge_relay import config
from edge_relay.service import running


def _port(wanted: int) -> int:
    """``wanted`` if it is free on 127.0.0.1, else any free port."""
    for port in (wanted, 0):
        with socket.socket() as s:
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


def _instructions(url: str, topic: str, agent: bool) -> str:
    lines = [
        f"edge-relay demo: a relay is running on {url}",
        "",
        "Push a first message:",
        f'  curl -d "Hello from edgepush" -H "Title: First message" {url}/{topic}',
        "",
        "Subscribe from another terminal:",
        f"  curl -s {url}/{topic}/json",
    ]
    if agent:
        lines += ["", f"A pushagent is subscribed to '{topic}': its notifications print here."]
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
        agent = _start_agent(url, topic, cfg.data_dir / "agent")
        print(_instructions(url, topic, agent is not None), flush=True)
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
