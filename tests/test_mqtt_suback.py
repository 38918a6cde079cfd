"""A refused SUBSCRIBE whose reason can pass is retried with the normal backoff, not the 60 s
pause; "not authorized" stays a stop-and-tell error (issue 13).

The refusals that can pass come from a broker cluster electing a leader (a 3-node NATS
cluster with a node down). No real broker here can be made to send a chosen SUBACK code on
demand, so the broker in these tests is a MOCK: a minimal MQTT server (CONNACK, SUBACK,
PINGRESP) that refuses the first SUBSCRIBEs with the code under test. The agent is the real
``pushagent run`` process. The code → decision table itself is checked without a broker.
The same mock also plays a broker that takes an MQTT 5 CONNECT and then closes the link at
the SUBSCRIBE (NATS 2.9 closes on some MQTT 5 packets; the real NATS here already refuses the
CONNECT, so this path needs the mock).
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import AuthError, ConnectionLost
from agent.transports.mqtt_protocol import SubscribeRefused, retry_delay, suback_error
from tests.helpers import wait_for
from tests.mqtt_helpers import Agent, stored_ids


def _read_packet(f: socket.SocketIO) -> tuple[int, bytes] | None:
    head = f.read(1)
    if not head:
        return None
    length, mult = 0, 1
    while True:
        b = f.read(1)
        if not b:
            return None
        length += (b[0] & 0x7F) * mult
        mult *= 128
        if not b[0] & 0x80:
            break
    body = b""
    while len(body) < length:
        chunk = f.read(length - len(body))
        if not chunk:
            return None
        body += chunk
    return head[0], body


class RefusingBroker(socketserver.ThreadingTCPServer):
    """MOCK broker: accepts CONNECT, refuses the first ``refusals`` SUBSCRIBEs with ``code``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, code: int, refusals: int, *, close_v5_subscribe: bool = False, slow: float = 0.0
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.slow = slow
        """Seconds a refusal takes (a NATS node with one down: its 4 s JetStream timeout)."""
        self.close_v5_subscribe = close_v5_subscribe
        """Take an MQTT 5 CONNECT, then close the link at its SUBSCRIBE (as NATS 2.9 does
        with some MQTT 5 packets)."""
        self.code = code
        self.refusals = refusals
        self.state_code: int | None = None
        """Set: the first SUBSCRIBE is granted, later ones (the agent's synced-state topics,
        issue 16, which it subscribes to on their own) answered with this code."""
        self.subscribes: list[float] = []  # monotonic time of each SUBSCRIBE
        self.filters: list[list[str]] = []  # the topic filters of each SUBSCRIBE
        self.connects = 0
        self.connect_times: list[float] = []  # monotonic time of each CONNECT
        self.close_after: set[int] = set()
        """SUBSCRIBEs (1-based, counted over all connections) answered, then the link closed."""
        self.close_at: set[int] = set()
        """SUBSCRIBEs not answered: the link is closed at them."""
        self.partial = False
        """A refused SUBSCRIBE grants its first filter and refuses the others (as a cluster
        refuses the filters whose consumer is still being created)."""
        self.short = False
        """The first SUBSCRIBE is answered with one reason code (granted), however many filters
        it names: a SUBACK short of codes, a broker's protocol error."""
        self.retained: bytes | None = None
        """Sent as a retained QoS 1 PUBLISH on ``a/r`` whenever ``a/#`` is granted: a broker
        MUST re-send the retained messages of a filter subscribed again (MQTT 3.1.1 §3.8.4)."""
        self.resent: bytes | None = None
        """Sent as a plain QoS 1 PUBLISH on ``a/x`` after the first SUBACK, then again with DUP
        and the same packet id (a broker's retry interval ran out: EMQX's is 30 s)."""
        self.published = 0
        self.pubacks = 0
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(socketserver.BaseRequestHandler):
    server: RefusingBroker

    def handle(self) -> None:
        sock: socket.socket = self.request
        f = socket.SocketIO(sock, "rb")
        v5 = True
        while (packet := _read_packet(f)) is not None:
            kind, body = packet[0] >> 4, packet[1]
            if kind == 1:  # CONNECT: 00 04 "MQTT" level ...
                v5 = body[6] == 5
                with self.server.lock:
                    self.server.connects += 1
                    self.server.connect_times.append(time.monotonic())
                sock.sendall(b"\x20\x03\x00\x00\x00" if v5 else b"\x20\x02\x00\x00")
            elif kind == 8 and v5 and self.server.close_v5_subscribe:
                return
            elif kind == 8:  # SUBSCRIBE
                filters = _filters(body, v5)
                with self.server.lock:
                    self.server.subscribes.append(time.monotonic())
                    self.server.filters.append(filters)
                    n = len(self.server.subscribes)
                if n in self.server.close_at:
                    return
                code = self.server.code if n <= self.server.refusals else 0x01
                if code != 0x01:
                    time.sleep(self.server.slow)
                props = b"\x00" if v5 else b""
                state = self.server.state_code
                codes = [code] if state is None else [0x01] if n == 1 else [state]
                if self.server.partial:
                    codes = [0x01 if i == 0 or code == 0x01 else code for i in range(len(filters))]
                if self.server.short:  # one code for all at first, then one per filter
                    codes = [0x01] * (1 if n == 1 else len(filters))
                rest = body[:2] + props + bytes(codes)
                sock.sendall(bytes([0x90, len(rest)]) + rest)
                retained = self.server.retained
                if retained is not None and any(
                    f == "a/#" and c == 0x01 for f, c in zip(filters, codes, strict=True)
                ):
                    with self.server.lock:
                        self.server.published += 1
                        pid = self.server.published
                    rest = b"\x00\x03a/r" + pid.to_bytes(2, "big") + props + retained
                    sock.sendall(bytes([0x33, len(rest)]) + rest)
                if self.server.resent is not None and n == 1:
                    with self.server.lock:
                        self.server.published += 2
                    rest = b"\x00\x03a/x\x00\x07" + props + self.server.resent
                    sock.sendall(bytes([0x32, len(rest)]) + rest)  # QoS 1
                    sock.sendall(bytes([0x3A, len(rest)]) + rest)  # QoS 1, DUP
                if n in self.server.close_after:
                    return
            elif kind == 4:  # PUBACK
                with self.server.lock:
                    self.server.pubacks += 1
            elif kind == 12:  # PINGREQ
                sock.sendall(b"\xd0\x00")
            elif kind == 14:  # DISCONNECT
                return


def _filters(body: bytes, v5: bool) -> list[str]:
    """The topic filters of a SUBSCRIBE's body (paho sends no MQTT 5 properties: one 0 byte)."""
    i = 2 + (1 if v5 else 0)
    out = []
    while i < len(body):
        n = int.from_bytes(body[i : i + 2], "big")
        out.append(body[i + 2 : i + 2 + n].decode())
        i += 2 + n + 1  # the filter, then its options byte
    return out


@pytest.fixture
def refusing(request: pytest.FixtureRequest) -> Iterator[RefusingBroker]:
    code, refusals, *close = request.param
    yield from _serve(RefusingBroker(code, refusals, close_v5_subscribe=bool(close)))


def _serve(server: RefusingBroker) -> Iterator[RefusingBroker]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def slow_refusing() -> Iterator[RefusingBroker]:
    yield from _serve(RefusingBroker(0x80, 3, slow=3.0))


def test_the_time_a_refusal_takes_counts_towards_the_backoff(
    slow_refusing: RefusingBroker, home: Path
) -> None:
    """Three SUBSCRIBEs refused after 3 s each, as a NATS node does with a cluster node down.
    The backoff's delays (0.25-0.5, 0.5-1, 1-2 s) are shorter than that, so each retry goes at
    once: the fourth SUBSCRIBE comes ~9 s after the first, not 10.75-12.5 s (3 x 3 s + the
    delays on top, as before)."""
    url = f"mqtt://127.0.0.1:{slow_refusing.port}"
    agent = Agent(home, url, "--topic", "a/#", "--mqtt-protocol", "3.1.1")
    agent.start(wait_connected=False)
    try:
        wait_for(lambda: agent.status().get("state") == "connected", timeout=30,
                 what=f"connected ({agent.log()[-800:]})")  # fmt: skip
        times = slow_refusing.subscribes[:4]  # a fifth: the synced-state topic's own
        assert len(times) == 4
        took = times[-1] - times[0]
        assert took < 10.5, f"{took:.1f} s from the first SUBSCRIBE to the granted one"
        assert agent.log().count("refused for now") == 3
    finally:
        assert agent.stop() == 0


@pytest.mark.parametrize(
    ("refusing", "protocol"),
    [((0x80, 2), "5"), ((0x83, 2), "5"), ((0x97, 2), "5"), ((0x80, 2), "3.1.1")],
    indirect=["refusing"],
    ids=["v5-unspecified", "v5-implementation-specific", "v5-quota-exceeded", "v311-failure"],
)
def test_a_refusal_that_can_pass_is_retried_with_the_normal_backoff(
    refusing: RefusingBroker, protocol: str, home: Path
) -> None:
    started = time.monotonic()
    url = f"mqtt://127.0.0.1:{refusing.port}"
    agent = Agent(home, url, "--topic", "a/#", "--mqtt-protocol", protocol).start()  # connected
    try:
        took = time.monotonic() - started
        # two refused, the third granted; then the synced-state topic's own SUBSCRIBE
        assert len(refusing.subscribes) == 4
        # the normal backoff: ~1 s, ~2 s (jittered) — never the 60 s pause of an auth error
        assert took < 15, f"connected after {took:.1f} s"
        log = agent.log()
        assert log.count("refused for now") == 2 and "retrying in 60 s" not in log
    finally:
        assert agent.stop() == 0


@pytest.mark.parametrize("refusing", [(0x80, 3)], indirect=True)
def test_a_refusal_that_can_pass_is_sent_again_on_the_same_connection(
    refusing: RefusingBroker, home: Path
) -> None:
    """A reconnect after each refusal cost a CONNECT each (which a NATS node with a cluster
    node down can itself close after its 4 s session timeout) and a fresh persistent session
    load: three refusals, four CONNECTs before. Now one CONNECT, four SUBSCRIBEs on it."""
    url = f"mqtt://127.0.0.1:{refusing.port}"
    agent = Agent(home, url, "--topic", "a/#", "--mqtt-protocol", "3.1.1").start()  # connected
    try:
        assert len(refusing.subscribes) >= 4  # three refused, one granted (+ the state topic's)
        assert refusing.connects == 1, f"{refusing.connects} CONNECTs"
        log = agent.log()
        assert log.count("refused for now") == 3 and "retrying in 60 s" not in log
    finally:
        assert agent.stop() == 0


def test_a_link_lost_while_waiting_to_subscribe_again_reconnects_at_once(home: Path) -> None:
    """The broker refuses the SUBSCRIBE and closes the link while the agent waits to send it
    again: the agent reconnects after the normal backoff (well under 5 s). It used to send
    the SUBSCRIBE into the closed client (paho: "not connected", unread) and wait the whole
    connect_timeout (10 s) for a SUBACK that could not come."""
    server = RefusingBroker(0x80, 1)
    server.close_after = {1}
    for _ in _serve(server):
        agent = Agent(home, f"mqtt://127.0.0.1:{server.port}", "--topic", "a/#",
                      "--mqtt-protocol", "3.1.1")  # fmt: skip
        try:
            agent.start(wait_connected=False)
            wait_for(lambda a=agent: a.status().get("state") == "connected", timeout=30,
                     what=f"connected ({agent.log()[-2000:]})")  # fmt: skip
            assert server.connects == 2, server.connects
            gap = server.connect_times[1] - server.subscribes[0]
            assert gap < 5.0, f"reconnected {gap:.1f} s after the link closed"
        finally:
            assert agent.stop() == 0


def test_a_link_closed_at_the_second_subscribe_is_no_reason_to_leave_mqtt5(home: Path) -> None:
    """The broker answered the first MQTT 5 SUBSCRIBE (refused for now), then closed the
    link at the one sent again (a NATS node's own session timeout, a node restarting). It
    has spoken MQTT 5 already: the agent reconnects in MQTT 5, it does not take the close for
    a broker that cannot read MQTT 5 packets and fall back to (and remember) 3.1.1."""
    server = RefusingBroker(0x80, 1)
    server.close_at = {2}
    for _ in _serve(server):
        agent = Agent(home, f"mqtt://127.0.0.1:{server.port}", "--topic", "a/#")  # auto
        try:
            agent.start()  # waits for "connected"
            log = agent.log()
            assert "with MQTT 5" in log and "with MQTT 3.1.1" not in log, log
            assert "did not work" not in log, log
        finally:
            assert agent.stop() == 0


def test_a_partly_granted_subscribe_sends_only_the_refused_filters_again(home: Path) -> None:
    """``a/#`` granted, ``b/#`` refused for now: the SUBSCRIBE sent again names ``b/#`` only.
    Naming ``a/#`` again replaces that subscription, and the broker MUST re-send its retained
    messages; the copies arrive on the same connection and were all committed (before, a
    refusal closed the connection and its uncommitted messages with it): a plain-text
    retained message, which has no id to dedupe by, was stored and shown once per SUBSCRIBE."""
    server = RefusingBroker(0x80, 1)
    server.partial = True
    server.retained = b"the door is open"
    for _ in _serve(server):
        agent = Agent(home, f"mqtt://127.0.0.1:{server.port}", "--topic", "a/#",
                      "--topic", "b/#", "--mqtt-protocol", "3.1.1")  # fmt: skip
        try:
            agent.start()
            wait_for(
                lambda: server.pubacks == server.published >= 1,
                timeout=20,
                what=f"every retained copy acked ({server.published} sent)",
            )
            assert len(stored_ids(home)) == 1, f"{len(stored_ids(home))} stored"
            assert server.filters[1] == ["b/#"], server.filters
        finally:
            assert agent.stop() == 0


def test_a_resend_while_the_subscribe_is_retried_is_stored_once(home: Path) -> None:
    """Messages on a granted filter arrive while the refused one is retried, and a broker
    resends an unacked one on the same connection (DUP, same packet id): the copies can be
    in one batch (read in one burst; before d872f7d nothing was committed until the
    SUBSCRIBEs were done, up to a minute) or in two. A plain-text message has no id of its
    own: the DUP copy must take the first's either way. It comes before any PUBACK, under the
    packet id still in flight: dropped as it is read (mqtt_redelivery.InFlight) and not acked
    again, since a second PUBACK for id 7 could acknowledge a new message given 7 after the
    first (before, both copies were acked)."""
    server = RefusingBroker(0x80, 1)
    server.partial = True
    server.resent = b"ON"
    for _ in _serve(server):
        agent = Agent(home, f"mqtt://127.0.0.1:{server.port}", "--topic", "a/#",
                      "--topic", "b/#", "--mqtt-protocol", "5")  # fmt: skip
        try:
            agent.start()
            wait_for(lambda: server.pubacks >= 1, timeout=20, what="the message acked")
            assert len(stored_ids(home)) == 1, f"{len(stored_ids(home))} stored"
            wait_for(agent.notified, timeout=10, what="the message shown")
            assert list(agent.notified().values()) == [1], agent.notified()
            assert server.pubacks == 1  # one PUBACK for both copies
        finally:
            assert agent.stop() == 0


def test_a_suback_short_of_reason_codes_grants_nothing(home: Path) -> None:
    """One reason code for ``a/#`` and ``b/#``: a protocol error, so ``b/#`` is not taken for
    granted (the codes were zipped with the filters, ``strict=False``: the agent ran as
    subscribed to both, and never received anything on ``b/#``). The link is dropped and the
    next connection asks for both again, in MQTT 5 still (no fallback: the broker answered)."""
    server = RefusingBroker(0x01, 0)
    server.short = True
    for _ in _serve(server):
        agent = Agent(home, f"mqtt://127.0.0.1:{server.port}", "--topic", "a/#",
                      "--topic", "b/#")  # fmt: skip
        try:
            agent.start(wait_connected=False)
            wait_for(lambda a=agent: a.status().get("state") == "connected", timeout=30,
                     what=f"connected ({agent.log()[-2000:]})")  # fmt: skip
            log = agent.log()
            assert "SUBACK has 1 reason code for 2 topic filters" in log, log
            assert server.connects == 2, server.connects
            messages = [f for f in server.filters if not f[0].startswith("edgepush/")]
            assert messages == [["a/#", "b/#"], ["a/#", "b/#"]], server.filters
            assert "with MQTT 5" in log and "with MQTT 3.1.1" not in log, log
        finally:
            assert agent.stop() == 0


@pytest.mark.parametrize("refusing", [(0x87, 100)], indirect=True)
def test_not_authorized_stays_a_stop_and_tell_error(refusing: RefusingBroker, home: Path) -> None:
    url = f"mqtt://127.0.0.1:{refusing.port}"
    agent = Agent(home, url, "--topic", "a/#").start(wait_connected=False)
    try:
        wait_for(lambda: "retrying in 60 s" in agent.log(), timeout=20, what="the 60 s pause")
        assert "subscription to 'a/#' refused: Not authorized (0x87)" in agent.log()
        assert len(refusing.subscribes) == 1
    finally:
        assert agent.stop() == 0


@pytest.mark.parametrize("refusing", [(0x80, 0, "close")], indirect=True)
def test_a_broker_that_takes_mqtt5_connect_but_closes_at_subscribe_converges_on_311(
    refusing: RefusingBroker, home: Path
) -> None:
    """Must handle (issue 13): the fallback converges and its reason is logged once."""
    url = f"mqtt://127.0.0.1:{refusing.port}"
    for _ in range(2):
        agent = Agent(home, url, "--topic", "a/#").start()  # waits for "connected"
        assert agent.stop() == 0
    log = agent.log()
    assert log.count("closed the connection after SUBSCRIBE") == 1, log
    assert log.count("with MQTT 3.1.1") == 2 and "with MQTT 5" not in log


@pytest.mark.parametrize(
    ("code", "kind"),
    [(0x80, SubscribeRefused), (0x83, SubscribeRefused), (0x97, SubscribeRefused),
     (0x87, AuthError), (0x8F, AuthError), (0x9E, AuthError), (0xA2, AuthError)],
)  # fmt: skip
def test_suback_decision_table(code: int, kind: type[Exception]) -> None:
    err = suback_error("a/#", code, "why")
    assert type(err) is kind and f"0x{code:02X}" in str(err)
    assert isinstance(err, ConnectionLost) != isinstance(err, AuthError)  # retried, or told


def test_only_a_subscribe_refusal_spends_its_own_time_from_the_backoff() -> None:
    refused = SubscribeRefused("refused for now")
    assert retry_delay(refused, 2.0, 0.5) == 1.5
    assert retry_delay(refused, 2.0, 4.0) == 0.0
    assert retry_delay(ConnectionLost("no CONNACK within 10 s"), 2.0, 10.0) == 2.0


def test_a_refused_state_topic_leaves_the_agent_connected(home: Path) -> None:
    """Issue 16 on a NATS cluster electing a leader: it refused ``edgepush/state/<topic>/#``
    for 20 s while it granted the message topic, and a fresh agent stayed "connecting"
    (CI). The messages come first: connected, with a warning; sync waits for a reconnect."""
    server = RefusingBroker(0x01, 0)
    server.state_code = 0x80
    for _ in _serve(server):
        agent = Agent(home, f"mqtt://127.0.0.1:{server.port}", "--topic", "door/#")
        try:
            agent.start(wait_connected=False)
            wait_for(lambda a=agent: a.status().get("state") == "connected", timeout=20,
                     what=f"connected ({agent.log()[-2000:]})")  # fmt: skip
            log = agent.log()
            assert "'edgepush/state/door/#' refused" in log and "not synced" in log, log
            assert len(server.subscribes) == 2  # messages, then states; not retried
        finally:
            agent.stop()
