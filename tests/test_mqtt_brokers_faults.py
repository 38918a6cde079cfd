"""2,000 messages per broker — half plain text, half with ids — published while the agent is
SIGKILLed twice and the broker restarted once (issue 13, "proven by"). Per broker: zero lost;
no message with an id twice; plain-text duplicates only where docs/MQTT.md's table allows them
(RabbitMQ and NATS: ``redelivery`` untrusted), none on mosquitto but what the publisher itself
sent twice (a QoS 1 publish whose PUBACK the restart took away is sent again; the broker keeps
both, as QoS 1 allows).

The restart comes while the publisher is mid-stream and the agent is SIGSTOPped: its link
stays open with what the broker sent it unread and unacknowledged, the rest of the backlog is
queued for it, and both must come back from the broker's persistent session. RabbitMQ and NATS
are SIGKILLed; mosquitto is stopped with SIGTERM, because a SIGKILL loses what it acknowledged
since its last autosave whoever the subscriber is (the bare-client test at the end shows it).

Each broker here is the test's own instance (the restart must not disturb the session's
shared ones).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.brokers import Broker, Client311, Nats, RabbitMQ
from tests.helpers import wait_for
from tests.mosquitto import Mosquitto
from tests.mqtt_helpers import Agent

N = 2000
DUPLICATES_ALLOWED = {"mosquitto": False, "rabbitmq": True, "nats": True}
BACKLOG = 300
"""Messages the broker must hold for the stopped agent (in flight or queued) when it restarts."""


def rows(home: Path) -> list[tuple[str, str]]:
    db = home / "data" / "pushagent.db"
    if not db.exists():
        return []
    conn = sqlite3.connect(db, timeout=10)
    try:
        return [(r[0], r[1]) for r in conn.execute("SELECT id, message FROM messages")]
    finally:
        conn.close()


def _payload(prefix: str, i: int) -> bytes:
    if i % 2:
        return f"plain {prefix} {i}".encode()
    return json.dumps({"id": f"{prefix}{i:05d}", "message": f"enveloped {i}"}).encode()


class Background:
    """Publish a range of messages from a thread, one at a time, each until its PUBACK: a publish
    that gets none (the broker restarting, a cluster moving a stream's leader) is sent again on
    a new connection, as an at-least-once publisher does. ``sends`` counts how often each
    payload went out (more than once: the broker may hold it twice); ``acked`` how many of the
    range are done; ``interval`` paces the publishes (seconds from one start to the next) so
    that a restart can land while they go on."""

    def __init__(
        self,
        port: int,
        topic: str,
        prefix: str,
        span: range,
        payload: Callable[[int, str], bytes] | None = None,
        *,
        interval: float = 0.0,
    ) -> None:
        make = payload or (lambda i, p: _payload(p, i))
        self.port = port
        self.client: Client311 | None = self._connect(time.monotonic() + 120)
        self.error: BaseException | None = None
        self.retries = 0
        self.reconnects = 0
        self.acked = 0
        self.sends: Counter[bytes] = Counter()

        def run() -> None:
            try:
                for i in span:
                    started = time.monotonic()
                    self._publish(topic, make(i, prefix))
                    self.acked += 1
                    time.sleep(max(0.0, started + interval - time.monotonic()))
            except BaseException as exc:  # reported by join()
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def _connect(self, deadline: float) -> Client311:
        while True:
            try:
                client = Client311(self.port, f"pub-{uuid.uuid4().hex[:8]}")
            except (OSError, AssertionError):  # refused, or no CONNACK: the broker is down
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
                continue
            # A lost link is replaced here, on a new connection: paho's own reconnect would
            # send the message again without ``sends`` knowing.
            client.client.reconnect_delay_set(300, 300)
            return client

    def _send(self, client: Client311, topic: str, payload: bytes) -> bool:
        """True once the PUBACK is in; False when the link went or none came in 15 s."""
        self.sends[payload] += 1
        info = client.client.publish(topic, payload, qos=1)
        give_up = time.monotonic() + 15
        try:
            while time.monotonic() < give_up:
                info.wait_for_publish(timeout=0.1)
                if info.is_published():
                    return True
                if not client.client.is_connected():
                    return False
        except (RuntimeError, ValueError):  # not even queued: not connected
            pass
        return False

    def _publish(self, topic: str, payload: bytes) -> None:
        deadline = time.monotonic() + 120
        while True:
            if self.client is None:
                self.client = self._connect(deadline)
                self.reconnects += 1
            if self._send(self.client, topic, payload):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no PUBACK for {payload[:40]!r} in 120 s")
            self.retries += 1
            self.client.close()
            self.client = None

    def ok(self) -> bool:
        """True while publishing goes on (raises the thread's error once it failed)."""
        if self.error is not None:
            raise AssertionError(f"the publisher failed: {self.error!r}")
        return True

    def join(self) -> None:
        self.thread.join(timeout=180)
        if self.client is not None:
            self.client.close()
        assert not self.thread.is_alive() and self.error is None, self.error


def restart(broker: Broker | Mosquitto) -> None:
    """Down and up again: SIGKILL, but SIGTERM for mosquitto (it saves only on its autosave
    interval and on the way out; see the last test)."""
    if isinstance(broker, Mosquitto):
        broker.stop()
        broker.start()
    else:
        broker.restart()


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", ["mosquitto", "rabbitmq", "nats"])
def test_2000_messages_through_two_agent_kills_and_a_broker_restart(
    name: str, tmp_path: Path, home: Path
) -> None:
    cls = {"mosquitto": Mosquitto, "rabbitmq": RabbitMQ, "nats": Nats}[name]
    broker = cls(tmp_path / name)
    broker.start()
    topic, prefix = f"t{uuid.uuid4().hex[:8]}", f"m{uuid.uuid4().hex[:6]}"
    agent = Agent(home, broker.url, "--topic", f"{topic}/#")
    sends: Counter[bytes] = Counter()
    try:
        agent.start()
        assert agent.proc is not None
        quarter = N // 4
        for k in range(2):  # two SIGKILLs, each while a quarter is streaming in
            pub = Background(
                broker.port, f"{topic}/x", prefix, range(k * quarter, (k + 1) * quarter)
            )
            wait_for(lambda k=k: len(rows(home)) > k * quarter + 100, timeout=60,
                     what=f"messages arriving before kill {k + 1}")  # fmt: skip
            agent.kill()
            pub.join()
            sends += pub.sends
            agent.start()
        # The restart, with the last half streaming in (>= 4 ms a message, so it still is) and
        # the agent SIGSTOPped: a backlog on the broker, part of it unread in the agent's socket
        os.kill(agent.proc.pid, signal.SIGSTOP)
        span = range(2 * quarter, N)
        pub = Background(broker.port, f"{topic}/x", prefix, span, interval=0.004)
        wait_for(lambda: pub.ok() and pub.acked >= 400, timeout=60, what="400 acknowledged")
        stored, acked = len(rows(home)), pub.acked
        assert stored <= 2 * quarter + acked - BACKLOG, (stored, 2 * quarter + acked)
        assert pub.reconnects == 0  # on its first link
        restart(broker)
        os.kill(agent.proc.pid, signal.SIGCONT)
        assert acked < len(span)  # it was mid-stream when the broker went down
        pub.join()
        assert pub.reconnects >= 1  # its link went with the broker: it re-sent what was unacked
        sends += pub.sends
        print(f"{name}: backlog {2 * quarter + acked - stored} at the restart, "
              f"{len(span) - acked} published across it")  # fmt: skip
        expected_ids = {f"{prefix}{i:05d}" for i in range(0, N, 2)}
        expected_texts = {f"plain {prefix} {i}" for i in range(1, N, 2)}

        def complete() -> bool:
            got = rows(home)
            return expected_ids <= {i for i, _ in got} and expected_texts <= {m for _, m in got}

        try:
            wait_for(complete, timeout=180, what=f"all {N} messages stored")
        except AssertionError:
            got = rows(home)
            lost = sorted(expected_ids - {i for i, _ in got}) + sorted(
                expected_texts - {m for _, m in got}
            )
            raise AssertionError(f"{len(lost)} lost: {lost[:10]}") from None
        got = rows(home)
        texts = Counter(m for _, m in got if m.startswith("plain "))
        assert len(got) == N + sum(n - 1 for n in texts.values())  # only plain text repeats
        twice = sorted(t for t, n in texts.items() if n > sends[t.encode()])  # the agent's
        resent = sorted(t for t, n in texts.items() if 1 < n <= sends[t.encode()])
        if not DUPLICATES_ALLOWED[name]:
            assert twice == [], twice[:5]
        print(f"{name}: {N} of {N} stored, {len(twice)} plain-text messages stored twice by the "
              f"agent, {len(resent)} sent twice by the publisher and stored twice")  # fmt: skip
    finally:
        if agent.proc is not None and agent.proc.poll() is None:
            os.kill(agent.proc.pid, signal.SIGCONT)  # a stopped process never sees SIGTERM
            agent.stop()
        broker.stop()


@pytest.mark.timeout(120)
def test_mosquitto_sigkill_loses_what_it_acked_since_its_last_autosave(tmp_path: Path) -> None:
    """Why mosquitto is restarted with SIGTERM above. mosquitto sends the PUBACK at once and
    writes its sessions to disk only every ``autosave_interval`` seconds (and on the way out):
    50 messages acknowledged after a save and queued for an offline session are gone after a
    SIGKILL — a bare paho subscriber, no agent — and all there after a SIGTERM."""
    broker = Mosquitto(tmp_path / "m")
    broker.start()
    db = broker.dir / "mosquitto.db"
    try:
        for how in ("kill", "stop"):
            sub = Client311(broker.port, f"sub-{how}", clean=False)
            sub.subscribe(f"{how}/#")
            sub.close()
            before = db.stat().st_mtime_ns if db.exists() else 0
            wait_for(lambda b=before: db.exists() and db.stat().st_mtime_ns != b, timeout=10,
                     what="an autosave with the session in it")  # fmt: skip
            saved = db.stat().st_mtime_ns
            pub = Client311(broker.port, f"pub-{how}")
            for i in range(50):
                pub.publish(f"{how}/x", str(i).encode())  # returns after the PUBACK
            pub.close()
            if how == "kill":
                broker.kill()
                # the 50 fit between two saves (~2 s apart with autosave_interval 1)
                assert db.stat().st_mtime_ns == saved, "a save came in between"
            else:
                broker.stop()
            broker.start()
            sub = Client311(broker.port, f"sub-{how}", clean=False)
            pub = Client311(broker.port, f"pub-{how}")
            pub.publish(f"{how}/x", b"after")  # queued after anything the session still has
            pub.close()
            # one topic: MQTT delivers its messages in order (§4.6), so all before "after"
            wait_for(lambda s=sub: b"after" in [p for _, p in s.received], timeout=10,
                     what="the message published after the restart")  # fmt: skip
            sub.close()
            got = [p for _, p in sub.received if p != b"after"]
            if how == "kill":
                assert got == [], f"{len(got)} of 50 survived a SIGKILL"
            else:
                assert sorted(got, key=int) == [str(i).encode() for i in range(50)]
    finally:
        broker.stop()
