"""Real RabbitMQ (with ``rabbitmq_mqtt``) and nats-server (JetStream + MQTT) brokers for tests,
and rumqttd, an MQTT 5 broker from PyPI (``Rumqttd``).

Both are the Debian packages (``rabbitmq-server`` 3.10, ``nats-server`` 2.9), started here on
free ports of 127.0.0.1 with their own data dirs, never the packaged services (packaging/dev.sh
stops those). RabbitMQ takes ~12 s to boot, so the fixtures in conftest.py start each broker
once per session; tests keep apart by their own client ids and topics.

RabbitMQ is an Erlang node: it needs a node name, a distribution port and an epmd (the Erlang
port mapper, normally a system daemon on 4369). The fixture runs its own epmd in the
foreground on a free port (``ERL_EPMD_PORT``), so nothing is left behind and a system epmd or
another RabbitMQ on this machine is never touched. The packaged wrapper /usr/sbin/rabbitmq-server
switches to the ``rabbitmq`` user when started as root; the script under /usr/lib/rabbitmq/bin
runs as whoever starts it, with every path taken from the ``RABBITMQ_*`` environment below.

Readiness is a deadline on "the MQTT port answers CONNECT with CONNACK": an open TCP port comes
several seconds before the MQTT plugin has really started on RabbitMQ.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

from tests.helpers import free_port, wait_for

_ERTS = Path("/usr/lib/erlang")
RABBITMQ = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"
EPMD = shutil.which("epmd") or next(iter(sorted(_ERTS.glob("erts-*/bin/epmd"))), None)


def mqtt_ready(port: int, client_id: str = "edgepush-ready-probe", *, version: int = 4) -> bool:
    """True when an MQTT 3.1.1 (``version=5``: MQTT 5) CONNECT, clean session, on ``port``
    gets a CONNACK accepting it."""
    cid = client_id.encode()
    props = b"\x00" if version == 5 else b""  # MQTT 5: an empty property list
    body = b"\x00\x04MQTT" + bytes([version]) + b"\x02\x00\x3c" + props
    body += len(cid).to_bytes(2, "big") + cid
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(bytes([0x10, len(body)]) + body)
            s.settimeout(2.0)
            answer = s.recv(5)
            s.sendall(b"\xe0\x00")  # DISCONNECT
    except OSError:
        return False
    if version == 5:  # CONNACK: flags, reason code 0, then its properties
        return answer[:1] == b"\x20" and answer[3:4] == b"\x00"
    return answer == b"\x20\x02\x00\x00"


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Broker:
    """A broker process on a free MQTT port: ``start``, ``kill`` (SIGKILL), ``stop``."""

    name = "broker"
    boot_timeout = 30.0

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.out = self.dir / f"{self.name}.out"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def start(self) -> Broker:
        argv, env = self.command()
        with self.out.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(self._ready, timeout=self.boot_timeout, interval=0.2,
                 what=f"{self.name} to answer MQTT CONNECT on port {self.port}")  # fmt: skip
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.proc.returncode}:\n{_tail(self.out)}"
            )
        return mqtt_ready(self.port)

    def _signal(self, sig: int, wait: float) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, sig)  # the whole group: RabbitMQ's script runs beam as a child
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL: no chance to save anything on the way out."""
        self._signal(signal.SIGKILL, 10)

    def stop(self) -> None:
        """SIGTERM: an orderly stop."""
        self._signal(signal.SIGTERM, 30)

    def restart(self) -> None:
        self.kill()
        self.start()


class RabbitMQ(Broker):
    """RabbitMQ 3.10 with the MQTT plugin, anonymous MQTT allowed (as guest, on loopback)."""

    name = "rabbitmq"
    boot_timeout = 90.0  # ~12 s alone on this machine; much more while other tests run

    def __init__(self, workdir: Path, *, prefetch: int | None = None) -> None:
        """``prefetch``: the MQTT plugin's ``mqtt.prefetch`` (unacked messages in flight per
        subscriber; RabbitMQ's default is 10)."""
        if not RABBITMQ.exists():
            raise RuntimeError(
                "rabbitmq-server is not installed: `apt-get install rabbitmq-server` "
                "(packaging/dev.sh test does this)"
            )
        if EPMD is None:
            raise RuntimeError("epmd (erlang-base) is missing: `apt-get install rabbitmq-server`")
        super().__init__(workdir)
        self.amqp_port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.node = f"edgepush{self.port}@localhost"
        self.epmd: subprocess.Popen[bytes] | None = None
        self.prefetch = prefetch

    def command(self) -> tuple[list[str], dict[str, str]]:
        d = self.dir
        (d / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
            f"mqtt.listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "mqtt.allow_anonymous = true\n"
            "log.file.level = info\n"
            "log.console = false\n"
            + (f"mqtt.prefetch = {self.prefetch}\n" if self.prefetch else "")
        )
        (d / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(d),  # the Erlang cookie goes here, not into root's home
            "LANG": "C.UTF-8",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),  # not /etc/rabbitmq's
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
        }
        return [str(RABBITMQ)], env

    def start(self) -> Broker:
        if self.epmd is None or self.epmd.poll() is not None:
            # Our own port mapper, in the foreground: it goes when we stop it.
            with (self.dir / "epmd.out").open("ab") as out:
                self.epmd = subprocess.Popen(
                    [str(EPMD), "-port", str(self.epmd_port)],
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            wait_for(lambda: _accepts(self.epmd_port), timeout=10, what="epmd to listen")
        return super().start()

    def stop(self) -> None:
        super().stop()
        if self.epmd is not None and self.epmd.poll() is None:
            self.epmd.terminate()
            self.epmd.wait(timeout=10)
        self.epmd = None


class Nats(Broker):
    """nats-server 2.9 with JetStream (its MQTT needs it) and MQTT on a free port."""

    name = "nats"
    boot_timeout = 30.0
    cluster = ""
    """A ``cluster { ... }`` block (``NatsCluster``), or nothing for a single server."""

    def __init__(self, workdir: Path) -> None:
        if not Path(NATS).exists():
            raise RuntimeError(
                "nats-server is not installed: `apt-get install nats-server` "
                "(packaging/dev.sh test does this)"
            )
        super().__init__(workdir)
        self.client_port = free_port()

    def command(self) -> tuple[list[str], dict[str, str]]:
        conf = self.dir / "nats.conf"
        conf.write_text(
            f"server_name: edgepush_{self.port}\n"
            f"listen: 127.0.0.1:{self.client_port}\n"
            f'jetstream {{ store_dir: "{self.dir / "jetstream"}" }}\n'
            # ack_wait: NATS resends an unacked message after it (default 30 s); 5 s keeps the
            # resend tests' waits short and changes nothing else they see (DUP, packet ids)
            f'mqtt {{ listen: 127.0.0.1:{self.port}, ack_wait: "{ACK_WAIT}s"'
            + (", stream_replicas: 3" if self.cluster else "")
            + " }\n"
            + self.cluster
        )
        return [NATS, "-c", str(conf)], {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


ACK_WAIT = 5
"""Seconds NATS's MQTT side waits for a PUBACK before it resends (its default is 30)."""


class NatsCluster:
    """Three nats-server nodes on loopback: routes between all, JetStream and MQTT on every one,
    MQTT's streams replicated 3 times (``stream_replicas``)."""

    def __init__(self, workdir: Path) -> None:
        self.nodes = [Nats(workdir / f"n{i}") for i in range(3)]
        routes = [free_port() for _ in self.nodes]
        urls = ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes)
        for node, port in zip(self.nodes, routes, strict=True):
            node.cluster = (
                f"cluster {{ name: edgepush, listen: 127.0.0.1:{port}, routes: [{urls}] }}\n"
            )

    def start(self) -> NatsCluster:
        for node in self.nodes:  # all at once: each waits for a JetStream quorum
            argv, env = node.command()
            with node.out.open("ab") as out:
                node.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                             start_new_session=True)  # fmt: skip
        try:
            for node in self.nodes:
                try:
                    wait_for(node._ready, timeout=60, interval=0.2, what=f"node {node.port}")
                except AssertionError as exc:
                    logs = "\n".join(f"{n.port}:\n{_tail(n.out)}" for n in self.nodes)
                    raise AssertionError(f"{exc}\n{logs}") from None
        except BaseException:
            self.stop()  # no node left running (its Popen would warn in a later test)
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class Rumqttd(Broker):
    """rumqttd (bytebeam's Rust broker, MQTT 5 and 3.1.1) as PyPI's ``iotcore`` ships it: a
    wheel with the broker compiled in and no dependencies, run as ``python -m iotcore
    --config``. ``port`` is its MQTT 5 listener, ``v4_port`` its 3.1.1 one (rumqttd speaks
    one protocol per listener). Sessions live in memory: a restart forgets them.

    The PyPI brokers in Python itself were looked at first (their 2026 releases, by their
    source): amqtt 0.12 refuses any CONNECT but 3.1.1 (protocol level 4), and moat-lib-mqtt
    0.8 (MQTT 5) drops a client's session when its link closes, so nothing is resent."""

    name = "rumqttd"
    boot_timeout = 20.0

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.v4_port = free_port()
        self.started = False

    def command(self) -> tuple[list[str], dict[str, str]]:
        conf = self.dir / "rumqttd.toml"
        listeners = "".join(
            f'[{v}.1]\nname = "{v}"\nlisten = "127.0.0.1:{port}"\nnext_connection_delay_ms = 1\n'
            f"[{v}.1.connections]\nconnection_timeout_ms = 60000\nmax_payload_size = 65536\n"
            f"max_inflight_count = 100\n" + ("dynamic_filters = true\n" if v == "v4" else "")
            for v, port in (("v4", self.v4_port), ("v5", self.port))
        )
        conf.write_text(
            "id = 0\n[router]\nid = 0\nmax_connections = 1000\nmax_outgoing_packet_count = 200\n"
            "max_segment_size = 104857600\nmax_segment_count = 10\n" + listeners
        )
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        return [sys.executable, "-m", "iotcore", "--config", str(conf)], env

    def start(self) -> Broker:
        """iotcore says "listening" before it binds, and exits when a bind fails: a port this
        process handed out can be taken meanwhile by any socket the kernel gives a free port
        (CI: the MQTT 5 listener's port answered, but not as rumqttd, and rumqttd was gone).
        So ready means both listeners answer their own protocol and rumqttd still runs after
        that; a lost bind is tried again on new ports, before any client knows the old ones."""
        for attempt in range(3):
            try:
                super().start()
                if self._ready():
                    self.started = True
                    return self
            except RuntimeError as exc:
                if "Address already in use" not in str(exc) or attempt == 2 or self.started:
                    raise  # a restart keeps its ports: its clients know them
            self.stop()
            self.port, self.v4_port = free_port(), free_port()
        raise AssertionError("unreachable")

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"rumqttd exited with {self.proc.returncode}:\n{_tail(self.out)}")
        # Ids of their own: no probe takes over the session of another still closing.
        return mqtt_ready(self.v4_port, f"ready-v4-{uuid.uuid4().hex[:8]}") and mqtt_ready(
            self.port, f"ready-v5-{uuid.uuid4().hex[:8]}", version=5
        )


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Client311:
    """A paho MQTT 3.1.1 client (both brokers speak it) that records what it receives."""

    def __init__(self, port: int, client_id: str, *, clean: bool = True) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.received: list[tuple[str, bytes]] = []
        self.subacks: list[object] = []
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=paho.MQTTv311, clean_session=clean)  # fmt: skip
        self.client.on_message = lambda c, u, m: self.received.append((m.topic, bytes(m.payload)))
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.subacks.append(codes)
        self.client.connect("127.0.0.1", port, 30)
        self.client.loop_start()
        try:
            wait_for(self.client.is_connected, timeout=15, what=f"{client_id} connected")
        except AssertionError:
            self.client.loop_stop()  # or its thread keeps reconnecting after the caller gave up
            raise

    def subscribe(self, topic: str) -> None:
        n = len(self.subacks)
        self.client.subscribe(topic, qos=1)
        wait_for(lambda: len(self.subacks) > n, timeout=15, what=f"SUBACK for {topic}")

    def publish(self, topic: str, payload: bytes) -> None:
        """QoS 1; returns after the PUBACK, raises TimeoutError when none came in 15 s."""
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=15)
        if not info.is_published():
            raise TimeoutError(f"no PUBACK for a message to {topic} within 15 s")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
