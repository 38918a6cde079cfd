"""Whether a broker's packet ids and DUP flag prove that an id-less message is a resend.

Part of the MQTT transport. The rule (DESIGN, round 2): **a message is never dropped as a
duplicate unless the agent can prove it is one.** For a message with an id (envelope ``id``)
the proof is the id. For one without (plain text), the transport records its packet id and a
digest, and a later PUBLISH with DUP, the same packet id and the same bytes takes the stored
message's id (``Store.insert_batch``). That is a proof only on a broker that resends with the
packet id the message first had and does not hand the id out again soon. Measured
(tests/test_broker_redelivery_probe.py):

* mosquitto keeps the id and numbers on across connections: a proof (``trusted``).
* RabbitMQ 3.10 renumbers from 1 on every connection, NATS 2.9 gives every new message the
  lowest free id. A second ``ON`` delivered but not read before a crash came back with DUP
  under the first ``ON``'s packet id and was dropped (tests/test_mqtt_plain_resend.py). Not a
  proof (``untrusted``): each id-less delivery is a new message, so a resend after a crash may
  be stored (and shown) twice; nothing is lost.

``[mqtt] redelivery`` is ``"auto"`` (the default), ``"trusted"`` or ``"untrusted"``. ``auto``
trusts a connection in MQTT 5 — both brokers that renumber speak only 3.1.1, and the brokers
known to keep ids (mosquitto, EMQX, HiveMQ, VerneMQ) speak 5 — until the broker shows either
misbehaviour on the wire: a packet id reused for a new (non-DUP) message within one connection
before 65,535 others (NATS), or, on a resumed session, new messages numbered from 1 again
after the previous connection had gone past it (RabbitMQ). Then the server is ``untrusted``
from that message on, said once in the log, and remembered (``mqtt-protocols.json``).

One resend is a proof on every broker, trusted or not: on the same connection, of a message not
yet acknowledged (``InFlight``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("pushagent.mqtt")

SETTINGS = ("auto", "trusted", "untrusted")
_ID_SPACE = 65535


class RedeliveryTrust:
    """Per server: may packet id + DUP + digest dedupe id-less messages? (pure, no I/O)"""

    def __init__(
        self,
        setting: str,
        server: str,
        *,
        known_untrusted: str | None = None,
        on_untrusted: Callable[[str], None] | None = None,
    ) -> None:
        self.setting = setting
        self.server = server
        self.reason: str | None = known_untrusted if setting == "auto" else None
        """Why the broker is not trusted (auto only), once it showed it."""
        self._on_untrusted = on_untrusted
        self._protocol = "5"
        self._seen: set[int] = set()
        self._count = 0
        self._previous_max = 0
        self._resumed = False
        self._first_new = True

    @property
    def trusted(self) -> bool:
        if self.setting != "auto":
            return self.setting == "trusted"
        return self._protocol == "5" and self.reason is None

    def connected(self, protocol: str, session_present: bool) -> None:
        """A new connection in ``protocol`` began (its CONNACK said ``session_present``)."""
        self._previous_max = max(self._seen, default=0)
        self._protocol = protocol
        self._resumed = session_present
        self._seen = set()
        self._count = 0
        self._first_new = True

    def observe(self, pid: int, dup: bool) -> None:
        """One QoS 1 PUBLISH as it arrived."""
        if dup:
            self._seen.add(pid)
            return
        why = None
        if pid in self._seen and self._count < _ID_SPACE:
            why = f"packet id {pid} was reused for a new message within {self._count} messages"
        elif self._first_new and self._resumed and pid == 1 and self._previous_max > 1:
            why = (
                "packet ids start again at 1 on a resumed session "
                f"(the previous connection had reached {self._previous_max})"
            )
        self._first_new = False
        self._seen.add(pid)
        self._count += 1
        if why is not None and self.reason is None and self.setting == "auto":
            self.reason = why
            log.warning(
                "%s: %s; id-less messages from it are no longer deduplicated by packet id "
                "(a resend after a crash may be shown twice; [mqtt] redelivery)",
                self.server, why,
            )  # fmt: skip
            if self._on_untrusted is not None:
                self._on_untrusted(why)


class InFlight:
    """One connection's QoS 1 messages received and not yet acknowledged (pure, no I/O).

    Within one connection a broker may not give a packet id to another message before the
    client's PUBACK for it (MQTT 3.1.1 §2.3.1, MQTT 5 §2.2.1). So a PUBLISH with DUP under a
    packet id still in flight here, with the same topic and bytes, is the broker resending that
    message (NATS does after its ack wait): a proof on every broker, with or without an id of
    its own. It is not handed on, and not acknowledged either: the one PUBACK sent after the
    first's commit covers both, and a second one, later, could acknowledge a new message that
    took the packet id after the first PUBACK (and that the agent had not stored: a loss).
    Anything else (other bytes, no DUP, an id already acked, another connection) is kept.
    """

    def __init__(self) -> None:
        self._held: dict[int, tuple[str, bytes]] = {}
        self.dropped = 0
        """Resends dropped since the last ``take_dropped``."""

    def resend(self, pid: int, qos: int, dup: bool, topic: str | None, payload: bytes) -> bool:
        """One PUBLISH as it arrived (``topic`` None: not UTF-8). True: a resend of one in
        flight, to be dropped without a PUBACK; otherwise it is in flight from now on."""
        if qos != 1:
            return False
        if topic is None:  # its bytes are not kept: nothing to compare a resend with
            self._held.pop(pid, None)
            return False
        if dup and self._held.get(pid) == (topic, payload):
            self.dropped += 1
            return True
        self._held[pid] = (topic, payload)
        return False

    def acked(self, pid: int) -> None:
        """The PUBACK for ``pid`` is going out: from now on the broker may reuse the id."""
        self._held.pop(pid, None)

    def take_dropped(self) -> int:
        """Resends dropped since the last call (the transport logs them per batch)."""
        n, self.dropped = self.dropped, 0
        return n
