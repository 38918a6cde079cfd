"""Which server to use: preference order, ``auto`` relays, failures, and no flapping. Pure.

Theory of operation
-------------------
``--server`` values form an ordered preference list; ``auto`` in it stands for the relays
that mDNS currently shows on the LAN (none, one or several). ``expand`` turns the list and
the discovered relays into ranked candidates. ``choose`` picks one:

1. Candidates that failed recently (in ``cooldown``) are left out, unless nothing else is left.
2. The best (lowest) rank wins: a relay found by ``auto`` listed first beats the cloud.
3. Among several relays of the same rank, the lowest measured connect time wins; an unmeasured
   one counts as slowest; ties go to the alphabetically first URL (deterministic).
4. Hysteresis: the current server is kept unless another of the same rank is faster by more
   than ``margin`` (relative) AND ``floor`` seconds (absolute), so two relays with similar
   times never make the agent flap between them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from agent.ntfy import AUTO, server_kind


@dataclass(frozen=True, slots=True)
class Candidate:
    """One server the agent may connect to. ``rank`` is its place in the preference list."""

    url: str
    rank: int
    discovered: bool = False
    connect_time: float | None = None


def expand(
    servers: Sequence[str],
    relays: Iterable[str],
    connect_times: Mapping[str, float] | None = None,
) -> list[Candidate]:
    """Rank the configured servers, replacing ``auto`` with the discovered ``relays``.

    A URL listed twice keeps its best rank.
    """
    times = connect_times or {}
    found = sorted(set(relays))
    out: dict[str, Candidate] = {}
    for rank, url in enumerate(servers):
        if server_kind(url) == "auto":
            for relay in found:
                out.setdefault(relay, Candidate(relay, rank, True, times.get(relay)))
        else:
            out.setdefault(url, Candidate(url, rank, False, times.get(url)))
    return sorted(out.values(), key=lambda c: (c.rank, c.url))


def has_auto(servers: Sequence[str]) -> bool:
    return any(s.strip().lower() == AUTO for s in servers)


def choose(
    candidates: Sequence[Candidate],
    *,
    current: str | None = None,
    cooldown: Mapping[str, float] | None = None,
    now: float = 0.0,
    margin: float = 0.3,
    floor: float = 0.005,
) -> Candidate | None:
    """The candidate to use now (see the module docstring); None when there is none."""
    cooling = cooldown or {}
    usable = [c for c in candidates if cooling.get(c.url, 0.0) <= now]
    if not usable:
        # Everything failed recently: retry the one whose cooldown ends first.
        if not candidates:
            return None
        return min(candidates, key=lambda c: (cooling.get(c.url, 0.0), c.rank, c.url))
    best_rank = min(c.rank for c in usable)
    group = [c for c in usable if c.rank == best_rank]
    best = min(group, key=_speed)
    for c in group:
        if c.url == current and not _clearly_faster(best, c, margin, floor):
            return c
    return best


def _speed(c: Candidate) -> tuple[float, str]:
    return (c.connect_time if c.connect_time is not None else float("inf"), c.url)


def _clearly_faster(a: Candidate, b: Candidate, margin: float, floor: float) -> bool:
    """True when ``a`` beats ``b`` by more than the hysteresis band."""
    if a.url == b.url or a.connect_time is None:
        return False
    if b.connect_time is None:
        return True
    gain = b.connect_time - a.connect_time
    return gain > floor and gain > margin * b.connect_time


def better_than(candidates: Sequence[Candidate], current: str) -> list[Candidate]:
    """Candidates of a strictly better rank than ``current`` (worth probing to move back)."""
    ranks = {c.url: c.rank for c in candidates}
    mine = ranks.get(current)
    if mine is None:
        return list(candidates)
    return [c for c in candidates if c.rank < mine]
