"""The relay's pure core: topic names, subscription filters, the publish rate limiter, and the
rule that maps hierarchical MQTT topics to relay topics. No sockets, no asyncio, no SQLite.

Topic mapping rule (upstream MQTT ↔ relay)
------------------------------------------
A relay topic is one ntfy-style level: 1-64 of ``A-Z a-z 0-9 _ -``. An MQTT topic's levels
are joined with ``-`` on the way down (``home/door`` → ``home-door``) and a relay topic's
``-`` become ``/`` on the way up (``home-door`` → ``home/door``). An MQTT level that itself
contains ``-`` (or any character a relay topic cannot hold) cannot round-trip, so such a
message is refused with a logged reason.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.envelope import Message, dumps, encode
from agent.errors import MessageError

TOPIC_RE = re.compile(r"[-_A-Za-z0-9]{1,64}")
_LEVEL_RE = re.compile(r"[_A-Za-z0-9]{1,64}")
_SQLITE_INT = range(-(2**63), 2**63)
MAX_SINCE_TIME = 2**40  # a unix time in seconds (year 36812): what the store's integers hold
RESERVED = frozenset({"v1", "metrics", "json", "sse", "ws", "raw", "docs", "static", "app"})


def check_relay_topic(name: str) -> str:
    """A relay topic name (ntfy's rule), or MessageError naming what is wrong with it."""
    shown = repr(name[:40]) + ("..." if len(name) > 40 else "")
    if not TOPIC_RE.fullmatch(name):
        raise MessageError(
            f"invalid topic {shown}: a topic is 1-64 letters, digits, '-' or '_'", field="topic"
        )
    if name in RESERVED:
        raise MessageError(f"topic {shown} is reserved", field="topic")
    return name


def parse_topic_list(text: str, *, limit: int) -> tuple[str, ...]:
    """``a,b,c`` from a subscribe URL: each checked, at most ``limit``, duplicates dropped."""
    parts = text.split(",", limit + 1)
    if len(parts) > limit:
        raise MessageError(
            f"too many topics in one subscription (the limit is {limit})", field="topic"
        )
    return tuple(dict.fromkeys(check_relay_topic(p) for p in parts))


def mqtt_to_relay(mqtt_topic: str) -> str:
    """``home/door`` → ``home-door``; MessageError if it cannot round-trip."""
    levels = mqtt_topic.split("/")
    if not all(_LEVEL_RE.fullmatch(level) for level in levels):
        raise MessageError(
            f"MQTT topic {mqtt_topic[:80]!r} has a level a relay topic cannot hold "
            "(each level: letters, digits, '_')",
            field="topic",
        )
    return check_relay_topic("-".join(levels))


def relay_to_mqtt(topic: str) -> str:
    """``home-door`` → ``home/door`` (the inverse of ``mqtt_to_relay``)."""
    return "/".join(check_relay_topic(topic).split("-"))


@dataclass(frozen=True, slots=True)
class PollRequest(Message):
    """ntfy's ``poll_request`` event (a publish with ``X-Poll-ID``): tells subscribers to poll
    for message ``extra["poll_id"]`` themselves. Sent to the subscribers connected now,
    never stored (ntfy: no cache), its ``message`` is ntfy's ``New message``. A type of its
    own, not a field, so no envelope from the outside can turn itself into one."""


ACTION_EVENTS = ("message_clear", "message_delete")
"""ntfy 2.16's events for a sequence id, stored as messages with ``extra["event"]``."""


def event_of(msg: Message) -> str:
    """The ntfy event a message goes out as: ``poll_request``, ``message_clear`` /
    ``message_delete`` (``extra["event"]``), or ``message``."""
    if isinstance(msg, PollRequest):
        return "poll_request"
    kind = msg.extra.get("event")
    return kind if kind in ACTION_EVENTS else "message"


_PRIORITY_WORDS = {"1": 1, "min": 1, "2": 2, "low": 2, "3": 3, "default": 3, "4": 4,
                   "high": 4, "5": 5, "max": 5, "urgent": 5}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Filters:
    """ntfy's subscribe filters, matched as its server matches them (``queryFilter.Pass``):
    ``id``, ``message`` and ``title`` equal exactly (case too), ``priority`` any of,
    ``tags`` all of (each exactly). Only ``message`` events are filtered; other events
    (``poll_request``) always pass."""

    priorities: frozenset[int] = frozenset()
    tags: frozenset[str] = frozenset()
    id: str | None = None
    message: str | None = None
    title: str | None = None

    @classmethod
    def parse(
        cls,
        priority: str | None,
        tags: str | None,
        *,
        id: str | None = None,
        message: str | None = None,
        title: str | None = None,
    ) -> Filters:
        """From the parameter values (None or empty: no filter). A priority that is not
        1-5 or one of ntfy's words is a MessageError on field ``priority`` (ntfy: 40007);
        tags are split on ``,`` without trimming, as ntfy's server does."""
        prios: set[int] = set()
        for word in (priority or "").split(",")[:10]:
            if word:
                value = _PRIORITY_WORDS.get(word.strip().lower())
                if value is None:
                    raise MessageError(
                        f"priority filter {word[:20]!r} is not 1-5 or min, low, default, "
                        "high, max, urgent",
                        field="priority",
                    )
                prios.add(value)
        tag_set = {t for t in (tags or "").split(",")[:50] if t}
        if not (prios or tag_set or id or message or title):
            return NO_FILTERS  # shared: two new empty frozensets per subscriber were ~0.5 KiB
        return cls(frozenset(prios), frozenset(tag_set), id or None, message or None,
                   title or None)  # fmt: skip

    @property
    def active(self) -> bool:
        """True if any filter is set (an unfiltered subscriber skips ``match``)."""
        return bool(self.priorities or self.tags or self.id or self.message or self.title)

    def match(self, msg: Message) -> bool:
        if isinstance(msg, PollRequest):
            return True  # ntfy filters message events only
        if self.id is not None and msg.id != self.id:
            return False
        if self.message is not None and msg.message != self.message:
            return False
        if self.title is not None and msg.title != self.title:
            return False
        if self.priorities and msg.priority not in self.priorities:
            return False
        return not self.tags or self.tags.issubset(msg.tags)


NO_FILTERS = Filters()


class TokenBucket:
    """A token bucket per client (ntfy's visitor request limiter): ``burst`` requests at once,
    refilled at ``rate`` per second.

    Memory is bounded: past ``max_clients`` buckets, the full ones are forgotten (a full
    bucket is the same as none), and if that is not enough the least recently seen go too,
    down to half the bound, so the cleanup costs O(1) per request amortised. Forgetting a
    bucket that is not full gives its client a fresh burst: no more than a new address gets.
    """

    def __init__(self, burst: int, rate: float, *, max_clients: int = 10_000) -> None:
        self.burst = burst
        self.rate = rate
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def wait(self, client: str, now: float | None = None) -> float:
        """Spend one token for ``client`` and return 0.0, or return the seconds until it
        has one (spending nothing: a refused request costs the client no token)."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(now - last, 0.0) * self.rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens - 1.0, now)
        if len(self._buckets) > self.max_clients:
            self._shrink(now)
        return 0.0

    def take(self, client: str, now: float | None = None) -> bool:
        """Spend one token for ``client``; False when the client is over its rate."""
        return self.wait(client, now) == 0.0

    def _shrink(self, now: float) -> None:
        self._buckets = {
            c: (t, last)
            for c, (t, last) in self._buckets.items()
            if t + (now - last) * self.rate < self.burst
        }
        keep = self.max_clients // 2
        if len(self._buckets) > keep:
            newest = sorted(self._buckets.items(), key=lambda kv: kv[1][1])[-keep:]
            self._buckets = dict(newest)


_IPV6_VISITOR_BITS = 64  # ntfy's visitor-prefix-bits-ipv6 default (IPv4: the whole address)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped  # a dual-stack socket's view of an IPv4 client
    return addr


def rate_key(remote: str, token_name: str | None) -> str:
    """The bucket a request counts against: its token's for an authenticated client (two
    devices behind one NAT with their own tokens are independent; one token used from many
    addresses is one visitor), else its address's — an IPv6 client's /64, as ntfy does."""
    if token_name is not None:
        return f"token:{token_name}"
    addr = _address(remote)
    if isinstance(addr, ipaddress.IPv6Address):
        net = ipaddress.IPv6Network((addr, _IPV6_VISITOR_BITS), strict=False)
        return f"ip:{net.network_address}"
    return f"ip:{addr if addr is not None else remote}"


_HOSTNAME_RE = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*\.?"
)
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class ExemptHosts:
    """``[limits] exempt_hosts`` as ntfy reads ``visitor-request-limit-exempt-hosts``: IP
    addresses, CIDRs (host bits masked) and host names (resolved at start by the I/O layer:
    ``resolved``). A client whose address is in one of them is never rate limited."""

    networks: tuple[_Network, ...] = ()
    hostnames: tuple[str, ...] = ()

    @classmethod
    def parse(cls, entries: Sequence[str]) -> ExemptHosts:
        """ValueError naming the first entry that is none of an address, a CIDR or a host
        name."""
        nets: list[_Network] = []
        names: list[str] = []
        for entry in entries:
            try:
                nets.append(ipaddress.ip_network(entry.strip(), strict=False))
                continue
            except ValueError:
                pass
            if (
                "/" in entry
                or entry.replace(".", "").isdigit()
                or not _HOSTNAME_RE.fullmatch(entry)
            ):
                raise ValueError(
                    f"'limits.exempt_hosts' entry {entry[:80]!r} is not an IP address, "
                    "a CIDR (10.0.0.0/8) or a host name"
                )
            names.append(entry)
        return cls(tuple(nets), tuple(names))

    def resolved(self, addresses: Mapping[str, Sequence[str]]) -> ExemptHosts:
        """These networks plus each host name's ``addresses`` (what it resolved to)."""
        more = [ipaddress.ip_network(a, strict=False) for n in self.hostnames
                for a in addresses.get(n, ()) if _address(a) is not None]  # fmt: skip
        return ExemptHosts(self.networks + tuple(more), self.hostnames)

    def contains(self, remote: str) -> bool:
        addr = _address(remote)
        return addr is not None and any(addr in net for net in self.networks)


def check_json_value(value: Any, name: str) -> None:
    """MessageError naming ``name`` unless ``value`` re-encodes as JSON text.

    ``json.loads`` accepts ``NaN``, ``Infinity`` and ``1e400`` (which becomes ``inf``), and
    decodes deep nesting up to the recursion limit; none of them can be written back out
    (``dumps`` refuses non-finite numbers), so each is refused here, at the request, naming
    the field, instead of failing later where other clients' messages share the work.
    """
    try:
        dumps(value).encode("utf-8")
    except ValueError:
        raise MessageError(
            f"{name} holds a number JSON cannot carry (NaN, Infinity, or beyond 1e308)", name
        ) from None
    except RecursionError:
        raise MessageError(f"{name} is nested too deeply", field=name) from None
    except UnicodeEncodeError:
        raise MessageError(f"{name} is not valid UTF-8 (a lone surrogate)", field=name) from None
    except TypeError:
        raise MessageError(f"{name} holds a value JSON cannot carry", field=name) from None


def check_storable(msg: Message) -> None:
    """MessageError unless ``Store.insert_batch`` can store ``msg``: every field re-encodes
    as UTF-8 JSON and every integer fits SQLite's 64 bits.

    The hub runs this on each publish before it joins a commit group, so one client's bad
    message is refused alone instead of failing the transaction it would share.
    """
    for name in ("time", "expires", "priority"):
        value = getattr(msg, name)
        if value is not None and value not in _SQLITE_INT:
            raise MessageError(f"{name} {value} is out of range", field=name)
    out = encode(msg)
    try:
        dumps(out).encode("utf-8")
    except (ValueError, RecursionError, UnicodeEncodeError, TypeError):
        for key, value in out.items():  # the slow path: name the field that cannot go out
            check_json_value(value, key)
        raise MessageError("message cannot be encoded as JSON", field="message") from None
