"""Which MQTT protocol to speak to a broker: MQTT 5 where it has it, 3.1.1 where it does not.

Part of the MQTT transport (``agent.transports.mqtt`` calls ``negotiate`` around one
connection attempt). ``[mqtt] protocol`` (the relay: ``[upstream] protocol``) is ``"auto"``
(the default), ``"5"`` or ``"3.1.1"``.

Theory of operation
-------------------
Brokers that speak only MQTT 3.1.1 answer an MQTT 5 CONNECT in three ways, all measured
(tests/test_mqtt_brokers.py, RabbitMQ and NATS): a CONNACK refusing the protocol (NATS 2.9:
0x84 "unsupported protocol version"; the 3.1.1 form is return code 1), a close of the connection
right after CONNECT (RabbitMQ 3.10's MQTT plugin), or no answer at all. A broker may also take
an MQTT 5 CONNECT and close the link at the first packet it mishandles (NATS 2.9 does so for
some MQTT 5 packets): a close before the first SUBACK counts too. Each of them is a
``ProtocolRefused``. With ``auto`` the transport tries MQTT 5 first and, on a ``ProtocolRefused``,
3.1.1 at once; the protocol that got a CONNACK is remembered per server in
``<data dir>/mqtt-protocols.json`` (0600), so later connections (every reconnect) go straight to
it and the fallback's reason is logged once, not at every reconnect. The answer is re-probed
(MQTT 5 first again) after ``REPROBE_AFTER`` — a broker may have been upgraded — or at once by
``pushagent status --probe``.

A protocol set explicitly is the only one tried; a refusal then is a ``ConfigError`` that says
the broker does not speak it and names the key to change. When both protocols fail with auto,
the 3.1.1 attempt's reason is what the caller sees (a close after CONNECT in both protocols is a
broker refusing us, not a protocol).

A refused SUBSCRIBE (``suback_error``) is a retry with the normal backoff when the reason can
pass: MQTT 5 0x80 "unspecified error", 0x83 "implementation specific error" and 0x97 "quota
exceeded", which cluster nodes send while they elect a leader (issue 13: 52 s to connect a
fresh agent to a NATS cluster with a node down, behind the 60 s pause). Any other reason
(0x87 "not authorized", a bad filter) is a stop-and-tell ``AuthError``. MQTT 3.1.1 has one
failure code, 0x80, for every reason: it is retried too, up to the backoff's cap (60 s), so
an ACL that refuses the topic is told in the log at every attempt. The backoff spaces the
attempts, it is not idle time after each: a node that takes 4 s to refuse (NATS 2.9 creating
a replicated consumer with a node down, its fixed JetStream timeout) is asked again at once
when the backoff's delay is shorter than that (``retry_delay``), not 4 s + the delay later.

Pure apart from the memory file (``ProtocolMemory``, a few hundred bytes read at connect time).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from agent.errors import AuthError, ConfigError, ConnectionLost, ServerRefused

log = logging.getLogger("pushagent.mqtt")

PROTOCOLS = ("auto", "5", "3.1.1")
REPROBE_AFTER = 7 * 86400.0
"""Seconds a remembered answer is trusted (a week: an upgraded broker is noticed soon enough)."""
MEMORY_FILE = "mqtt-protocols.json"
AGENT_KEY = "[mqtt] protocol"
RELAY_KEY = "[upstream] protocol"

# MQTT 5 CONNACK 0x84 "Unsupported Protocol Version" (MQTT 5 §3.2.2.2); MQTT 3.1.1 return code
# 1 "unacceptable protocol version" (§3.2.2.3), which paho hands over as 1 either way.
_REFUSED_V5 = 0x84
_REFUSED_V3 = 1

T = TypeVar("T")


class ProtocolRefused(ConnectionLost):
    """The broker refused, dropped or ignored a CONNECT in ``protocol``."""

    def __init__(self, protocol: str, why: str, *, explicit: bool = False) -> None:
        super().__init__(why)
        self.protocol = protocol
        self.why = why
        self.explicit = explicit
        """True for a CONNACK that names the protocol as the reason (not a close or silence)."""


def refusal(code: Any) -> str | None:
    """The reason when CONNACK ``code`` (a paho ReasonCode or a 3.1.1 int) refuses the protocol."""
    value = getattr(code, "value", code)
    if isinstance(value, int) and value in (_REFUSED_V5, _REFUSED_V3):
        return "the broker refused the protocol version (CONNACK: unsupported protocol version)"
    return None


SUBACK_TRANSIENT = {0x80, 0x83, 0x97}
"""SUBACK reason codes that can pass (MQTT 5 §3.9.3; 0x80 is also 3.1.1's only failure)."""


class SubscribeRefused(ConnectionLost):
    """A SUBSCRIBE refused with a reason that can pass (``SUBACK_TRANSIENT``)."""


def suback_error(topic: str, code: int, name: str) -> ConnectionLost | AuthError:
    """The error for a SUBSCRIBE to ``topic`` refused with ``code`` (``name``: its text)."""
    if code in SUBACK_TRANSIENT:
        return SubscribeRefused(
            f"subscription to {topic!r} refused for now: {name} (0x{code:02X}); "
            "retrying (a broker cluster refuses while it elects a leader; if it persists, "
            "check the broker's ACL for this topic)"
        )
    return AuthError(f"subscription to {topic!r} refused: {name} (0x{code:02X})")


def suback_mismatch(codes: int, filters: int) -> ConnectionLost:
    """The error for a SUBACK with ``codes`` reason codes for a SUBSCRIBE of ``filters``.

    MQTT 5 and 3.1.1 (§3.9.3 in both) give one reason code per topic filter, in order: a SUBACK
    with fewer (or more) is a protocol error, and which filters it granted is unknown, so
    none of them counts as granted: the whole SUBACK is an error (HiveMQ's Java client fails
    the whole SUBSCRIBE on a count mismatch too). A protocol error closes the connection (MQTT 5
    §4.13), so the attempt fails like a lost link and the agent reconnects with the backoff,
    asking for every filter again. Not a ``ProtocolRefused``: the broker answered in this
    protocol, there is nothing to fall back from."""
    return ConnectionLost(
        f"the broker's SUBACK has {codes} reason code{'s' * (codes != 1)} for {filters} topic "
        "filters (a protocol error: one per filter)"
    )


def retry_delay(exc: Exception, delay: float, spent: float) -> float:
    """Seconds to wait before the next attempt after ``exc``, which took ``spent`` seconds:
    ``delay`` (the backoff's), less the time a SUBSCRIBE refusal took to come back."""
    if isinstance(exc, SubscribeRefused):
        return max(0.0, delay - spent)
    return delay


def check_connack(code: Any, protocol: str) -> None:
    """Raise ``ProtocolRefused`` when CONNACK ``code`` refuses ``protocol`` (else nothing)."""
    why = refusal(code)
    if why is not None:
        raise ProtocolRefused(protocol, why, explicit=True)


def closed_after_connect(protocol: str, reason: object, packet: str = "CONNECT") -> ProtocolRefused:
    """The error for a connection the broker closed before answering ``packet``."""
    return ProtocolRefused(protocol, f"the broker closed the connection after {packet} ({reason})")


def link_closed(reason: object) -> ConnectionLost:
    """The error for a link the broker closed once it had read our packets (a lost link)."""
    return ConnectionLost(f"the broker closed the connection ({reason})")


def closed_early(
    connack: asyncio.Future[Any],
    suback: asyncio.Future[Any] | None,
    protocol: str,
    rc: object,
    *,
    subscribed: bool = False,
) -> None:
    """The link closed: fail the CONNACK (or else the SUBACK) still awaited with a refusal.

    ``subscribed``: a SUBACK has come on this link already, so the broker reads our SUBSCRIBEs
    in ``protocol``; a close at a later one (sent again after a refusal, the synced-state
    topics') is a lost link, not a ``ProtocolRefused`` that would fall back to 3.1.1."""
    if not connack.done():
        connack.set_exception(closed_after_connect(protocol, rc))
        connack.exception()  # marks it retrieved: an attempt that already failed awaits none
    elif suback is not None and not suback.done():
        if subscribed:
            suback.set_exception(link_closed(rc))
        else:
            suback.set_exception(closed_after_connect(protocol, rc, "SUBSCRIBE"))
        suback.exception()  # (a refused CONNACK closes the link before any SUBSCRIBE)


def silent(protocol: str, timeout: float) -> ProtocolRefused:
    """The error for a CONNECT that got no CONNACK within ``timeout``."""
    return ProtocolRefused(protocol, f"no CONNACK within {timeout:.0f} s")


@dataclass(frozen=True)
class Remembered:
    protocol: str
    probed: float
    untrusted: str | None = None
    """Why the server's packet ids do not prove a resend (``mqtt_redelivery``), once seen."""


def attempt_order(setting: str, remembered: Remembered | None, now: float) -> tuple[str, ...]:
    """The protocols to try, in order, for ``setting`` and what is remembered of this server."""
    if setting != "auto":
        return (setting,)
    if remembered is not None and 0 <= now - remembered.probed < REPROBE_AFTER:
        other = "5" if remembered.protocol == "3.1.1" else "3.1.1"
        return (remembered.protocol, other)
    return ("5", "3.1.1")


def mismatch(exc: ProtocolRefused, key: str) -> ConfigError | ConnectionLost:
    """The error for an explicitly set protocol the broker refused: it names ``key``."""
    other = "3.1.1" if exc.protocol == "5" else "5"
    hint = f'set {key} = "auto" (or "{other}")'
    if exc.explicit:
        return ConfigError(f"the broker does not speak MQTT {exc.protocol}: {exc.why}; {hint}")
    return ConnectionLost(
        f"{exc.why}; a broker that does not speak MQTT {exc.protocol} may do this: {hint}"
    )


class ProtocolMemory:
    """``<data dir>/mqtt-protocols.json``: the protocol each server last accepted, and when."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / MEMORY_FILE

    def read(self) -> dict[str, Remembered]:
        """Everything remembered; an absent or damaged file is an empty memory (re-probed)."""
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        found: dict[str, Remembered] = {}
        if isinstance(raw, dict):
            for server, entry in raw.items():
                if not isinstance(entry, dict):
                    continue
                proto, probed = entry.get("protocol"), entry.get("probed")
                why = entry.get("untrusted")
                if proto in ("5", "3.1.1") and isinstance(probed, int | float):
                    untrusted = why if isinstance(why, str) else None
                    found[str(server)] = Remembered(str(proto), float(probed), untrusted)
        return found

    def get(self, server: str) -> Remembered | None:
        return self.read().get(server)

    def put(self, server: str, protocol: str, now: float) -> None:
        """Remember ``protocol`` for ``server`` (atomically, 0600); a failure only logs."""
        entries = self.read()
        old = entries.get(server)
        entries[server] = (
            replace(old, protocol=protocol, probed=now) if old else Remembered(protocol, now)
        )
        self._write(entries)

    def mark_untrusted(self, server: str, why: str) -> None:
        """Remember that ``server``'s packet ids do not prove a resend."""
        entries = self.read()
        old = entries.get(server) or Remembered("5", 0.0)
        entries[server] = replace(old, untrusted=why)
        self._write(entries)

    def _write(self, entries: dict[str, Remembered]) -> bool:
        data: dict[str, dict[str, Any]] = {}
        for s, r in entries.items():
            data[s] = {"protocol": r.protocol, "probed": r.probed}
            if r.untrusted:
                data[s]["untrusted"] = r.untrusted
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".mqtt-protocols.")
            try:
                with os.fdopen(fd, "w") as f:  # mkstemp makes it 0600
                    json.dump(data, f, indent=1, sort_keys=True)
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            log.warning("cannot remember the MQTT protocol in %s: %s", self.path, exc)
            return False
        return True


_LOGGED: set[tuple[str, str]] = set()
"""(server, protocol) pairs whose refusal this process has logged as a warning."""


async def negotiate(
    attempt: Callable[[str], Awaitable[T]],
    *,
    setting: str,
    server: str,
    memory: ProtocolMemory,
    key: str,
    probe: bool = False,
    answered: Callable[[], str | None] = lambda: None,
    now: Callable[[], float] = time.time,
) -> tuple[T, str]:
    """Run ``attempt(protocol)`` in the protocols ``setting`` allows; return its result and the
    protocol that worked. ``probe`` ignores what is remembered (``status --probe``).

    ``answered()`` names the protocol the last attempt got a CONNACK in: an attempt that fails
    later (a SUBSCRIBE refused while a cluster elects) still settles the protocol, so its
    retries do not try (and log) MQTT 5 again."""
    remembered = None if probe else memory.get(server)
    order = attempt_order(setting, remembered, now())
    last: ProtocolRefused | None = None

    def remember(protocol: str) -> None:
        t = now()
        if setting == "auto" and (
            probe
            or remembered is None
            or remembered.protocol != protocol
            or t - remembered.probed >= REPROBE_AFTER
        ):
            memory.put(server, protocol, t)

    for protocol in order:
        try:
            result = await attempt(protocol)
        except ProtocolRefused as exc:
            last = exc
            if protocol != order[-1]:
                # once per server and protocol in a process: a fallback whose next attempt
                # fails before its CONNACK (a cluster electing) comes back here on each retry
                seen = (server, protocol) in _LOGGED
                _LOGGED.add((server, protocol))
                (log.debug if seen else log.warning)(
                    "%s: MQTT %s did not work (%s); trying MQTT %s (%s)",
                    server, protocol, exc.why, order[order.index(protocol) + 1], key,
                )  # fmt: skip
            continue
        except BaseException:
            if answered() == protocol:
                remember(protocol)
            raise
        remember(protocol)
        return result, protocol
    assert last is not None
    if setting != "auto":
        raise mismatch(last, key) from None
    raise ConnectionLost(last.why) from None


# MQTT 5 CONNACK reason codes (and their 3.1.1 return codes 4 and 5) a person must fix.
_AUTH_CODES = {0x86, 0x87, 0x8C, 0x85, 0x8A}
_AUTH_V3 = {4: "bad user name or password", 5: "not authorized"}


def refused(code: Any) -> None:
    """Raise for a CONNACK that refused: ServerRefused for what a person must fix (bad
    credentials, not authorised), ConnectionLost for the rest."""
    if not isinstance(code, int):  # MQTT 5: paho's ReasonCode
        if not code.is_failure:
            return
        if code.value in _AUTH_CODES:
            raise ServerRefused(f"the broker refused the connection: {code}")
        raise ConnectionLost(f"the broker refused the connection: {code}")
    if code == 0:
        return
    if code in _AUTH_V3:
        raise ServerRefused(f"the broker refused the connection: {_AUTH_V3[code]}")
    raise ConnectionLost(f"the broker refused the connection (code {code})")
