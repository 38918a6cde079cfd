"""A real relay process for tests: ``python -m edge_relay serve`` on a free port.

Tests shorten the keepalive and loosen the publish rate through a TOML config file (the
same file users write), never through test-only flags.
"""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.helpers import child_env, free_port, spawn, wait_for

FAST = """
keepalive = 0.5
[limits]
publish_burst = 100000
publish_rate = 100000.0
max_subscriptions = 2000
"""


class Relay:
    def __init__(
        self,
        workdir: Path,
        *,
        config: str = FAST,
        args: Sequence[str] = (),
        port: int = 0,
        env: Mapping[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.dir = workdir
        self.tls = tls
        """The client context that trusts the relay's certificate, for one started with
        ``--tls-cert``/``--tls-key``: the url is https and the health check uses it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.config = self.dir / "relay.toml"
        self.config.write_text(config)
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "relay.log"
        self.env = dict(env) if env is not None else child_env()
        """The relay's environment (default: this checkout's code; a benchmark may run
        another tree's)."""

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> Relay:
        argv = ["serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir",
                str(self.dir / "data"), "--config", str(self.config), *self.args]  # fmt: skip
        if "--advertise" in argv:
            argv.remove("--advertise")
        elif "--no-advertise" not in argv:
            argv.append("--no-advertise")
        with self.log.open("ab") as log:
            self.proc = spawn("edge_relay", argv, env=self.env, stdout=log, stderr=log)
        wait_for(self._healthy, timeout=30, what=f"relay on {self.port} ({self.log})")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"relay exited {self.proc.returncode}: {self.log.read_text()}")
        try:
            with urllib.request.urlopen(self.url + "/v1/health", timeout=2, context=self.tls) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return int(self.proc.returncode)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One HTTP request with urllib; (status, parsed JSON or text)."""
        req = urllib.request.Request(
            self.url + path, data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
            exc.close()
        text = raw.decode("utf-8", "replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def publish(self, topic: str, text: str, **headers: str) -> dict[str, Any]:
        status, body = self.request("PUT", f"/{topic}", text.encode(), headers)
        assert status == 200, body
        return dict(body)

    def poll(self, topics: str, query: str = "") -> list[dict[str, Any]]:
        """``GET /<topics>/json?poll=1&...``: the cached messages."""
        status, _ = 0, None
        req = urllib.request.Request(f"{self.url}/{topics}/json?poll=1&{query}")
        with urllib.request.urlopen(req, timeout=15) as r:
            status, raw = r.status, r.read()
        assert status == 200
        return [json.loads(line) for line in raw.decode().splitlines() if line]


def module_relay(tmp_path_factory: Any, name: str) -> Iterator[Relay]:
    """Body of a module-scoped ``relay`` fixture: one relay for the module's tests, which
    must stop cleanly and never have logged a traceback."""
    r = Relay(tmp_path_factory.mktemp(name)).start()
    try:
        yield r
    finally:
        assert r.stop() == 0, r.log.read_text()
        assert "Traceback" not in r.log.read_text(), r.log.read_text()


def unique_topic(prefix: str) -> str:
    """A topic no other test of a shared relay uses."""
    return prefix + uuid.uuid4().hex[:12]
