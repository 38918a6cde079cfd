"""A real mosquitto broker for tests: own config, own port, persistence in a temp dir.

Settings are the ones a production broker should have (docs/INSTALL.md):
``set_tcp_nodelay true`` (no ~40 ms Nagle stalls) and a ``max_queued_messages`` large enough
for the tests — mosquitto's default of 1000 silently drops queued QoS 1 messages for an
offline client. ``kill()`` is SIGKILL; ``start()`` again brings the same broker back on the
same port with its persisted sessions (``autosave_interval 1`` bounds what a kill can lose
to the last second, as in production with persistence).
"""

from __future__ import annotations

import getpass
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.helpers import free_port, wait_for

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Mosquitto:
    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        extra_config: str = "",
        persistence: bool = True,
    ) -> None:
        if not Path(MOSQUITTO).exists():
            raise RuntimeError(
                "mosquitto is not installed: `apt-get install mosquitto mosquitto-clients` "
                "(packaging/dev.sh test does this)"
            )
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra_config = extra_config
        self.persistence = persistence
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        conf = self.dir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            # as root mosquitto would switch to user "mosquitto", which cannot write here
            f"user {getpass.getuser()}",
            "set_tcp_nodelay true",
            "max_queued_messages 200000",
            "max_inflight_messages 100",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.dir}/",
            "autosave_interval 1",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            self.extra_config,
        ]
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self, timeout: float = 10.0) -> Mosquitto:
        conf = self.write_config()
        with (self.dir / "mosquitto.stderr").open("ab") as err:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=err
            )
        wait_for(self._accepts, timeout=timeout, what=f"mosquitto on port {self.port}")
        return self

    def _accepts(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            err = (self.dir / "mosquitto.stderr").read_text(errors="replace")
            raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {err}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no chance to save anything since the last autosave."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM: an orderly stop that saves persistence."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def restart(self, *, down_for: float = 0.0) -> None:
        self.kill()
        if down_for:
            time.sleep(down_for)  # the outage itself is what is being tested
        self.start()
