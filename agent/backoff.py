"""Reconnect backoff as a pure generator, and the one function that says what is retryable."""

from __future__ import annotations

import random
from collections.abc import Iterator

from agent.errors import AuthError, ConfigError, ConnectionLost, StoreBusy, TransportError


def backoff(
    *,
    initial: float = 0.5,
    factor: float = 2.0,
    cap: float = 60.0,
    jitter: float = 0.5,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """Delays before successive reconnect attempts: exponential up to ``cap``, with jitter.

    Each delay is drawn uniformly from ``[d * (1 - jitter), d]`` ("equal jitter") so a fleet of
    agents that lost the same broker does not come back in one wave. Start a new generator
    after a successful connect: that is the reset.
    """
    rand = rng or random.Random()
    delay = initial
    while True:
        yield delay * (1 - jitter * rand.random())
        delay = min(cap, delay * factor)


PERMANENT = frozenset({400, 401, 403, 404})
"""HTTP answers that the same request will get again: a bad topic, a missing or refused token,
no such endpoint. 408, 429 and 5xx pass; 405/409/413 are not answers to a subscription."""


def is_permanent(status: int) -> bool:
    """True when an HTTP ``status`` to a subscription cannot change by retrying it."""
    return status in PERMANENT


def is_retryable(exc: BaseException) -> bool:
    """True when reconnecting soon may help; False for errors a person must fix.

    Auth and TLS failures are not retryable in a fast loop: callers back off straight to the
    cap and keep saying why (a password may be fixed while the agent runs).
    """
    if isinstance(exc, AuthError | ConfigError):
        return False
    return isinstance(exc, ConnectionLost | StoreBusy | TransportError | OSError | TimeoutError)
