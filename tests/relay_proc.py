"""A real ``edge-relay`` process and real ``pushagent run`` processes for the WebSocket tests."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from tests.helpers import child_env, complete_lines, free_port, wait_for

# Tests publish thousands of messages from one client: lift ntfy's per-client rate limit.
RELAY_TOML = """\
[limits]
publish_burst = 1000000
publish_rate = 1000000.0
send_queue = 5000
"""


class RelayProc:
    """One relay on a fixed free port; killable with SIGKILL and restartable on the same port."""

    def __init__(
        self,
        root: Path,
        *,
        advertise: bool = False,
        upstream: str | None = None,
        upstream_topics: Sequence[str] = (),
        keepalive: float | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.root = root
        self.extra_args = tuple(extra_args)
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.advertise = advertise
        self.upstream = upstream
        self.upstream_topics = tuple(upstream_topics)
        # keepalive is a top-level key: it must come before the [limits] table
        self.config = root / "relay.toml"
        self.config.write_text((f"keepalive = {keepalive}\n" if keepalive else "") + RELAY_TOML)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / f"relay-{self.starts}.log"

    def start(self) -> RelayProc:
        self.starts += 1
        args = ["serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir",
                str(self.root / "data"), "--config", str(self.config)]  # fmt: skip
        if not self.advertise:
            args.append("--no-advertise")
        args += self.extra_args
        if self.upstream:
            args += ["--upstream", self.upstream]
            for t in self.upstream_topics:
                args += ["--upstream-topic", t]
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_relay", *args],
            env=child_env(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._ready, timeout=30, what=f"relay on port {self.port} ready")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"relay exited: {self.log_path.read_text()[-2000:]}")
        return b"ready on port" in self.log_path.read_bytes()

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


class Publisher:
    """Publishes to a relay over one keep-alive HTTP connection; returns the stored ids."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def publish(self, topic: str, text: str) -> str:
        self.conn.request("POST", f"/{topic}", body=text.encode(), headers=self.headers)
        resp = self.conn.getresponse()
        body = resp.read()
        assert resp.status == 200, body
        return str(json.loads(body)["id"])

    def close(self) -> None:
        self.conn.close()


class AgentProc:
    """``pushagent run ... --notifier log``; each start writes its own stdout file."""

    def __init__(self, home: Path, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.home = home
        self.args = list(args)
        self.env = env or {}
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._files: list[IO[bytes]] = []

    def out(self, n: int) -> Path:
        return self.home / f"agent-{n}.out"

    def start(self) -> AgentProc:
        self.starts += 1
        out = self.out(self.starts).open("wb")
        err = (self.home / f"agent-{self.starts}.err").open("wb")
        self._files += [out, err]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", *self.args, "--notifier", "log"],
            env={**child_env(self.home), **self.env},
            stdout=out,
            stderr=err,
        )
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        for f in self._files:
            f.close()
        self._files.clear()

    def runs(self) -> list[list[str]]:
        """The ids each incarnation printed, one list per start, in order."""
        lines = [complete_lines(self.out(n).read_bytes()) for n in range(1, self.starts + 1)]
        return [[json.loads(line)["id"] for line in run if line.strip()] for run in lines]

    def notified(self) -> list[str]:
        """Every message id any incarnation printed, in order (a repeat shows up twice)."""
        return [i for run in self.runs() for i in run]

    def stderr(self) -> str:
        return "".join(
            (self.home / f"agent-{n}.err").read_text(errors="replace")[-3000:]
            for n in range(1, self.starts + 1)
        )
