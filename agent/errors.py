"""The one exception tree of edgepush.

Split by what the caller does next::

    EdgepushError
    ├── ConfigError        stop, tell the user (exit 2): names file, key and value
    ├── UsageError         stop, tell the user (exit 2): a bad command-line value
    ├── AuthError          stop retrying fast, tell the user to log in (exit 1)
    │   └── ServerRefused  the server refused what we ask (400, 401/403, 404, CONNACK):
    │                      stop at start (exit 2); once connected before, retry at the cap
    ├── MessageError       reject this one message, log it, carry on with the rest
    ├── StoreError         the database cannot be used (corrupt, read-only): exit 2
    │   └── StoreBusy      locked or disk full at commit: retry later, nothing acked
    ├── TransportError     a connection problem
    │   └── ConnectionLost retry with backoff
    │       └── RateLimited  the server said 429: retry after its Retry-After, not sooner
    └── InvalidState       a bug: an operation in a state that should be impossible

Adapters convert foreign errors at their boundary (``raise TransportError(...) from exc``),
so nothing above them needs to know which library raised.
"""

from __future__ import annotations


class EdgepushError(Exception):
    """Root of every error edgepush raises on purpose."""

    exit_code = 1


class ConfigError(EdgepushError):
    """A configuration value is missing or wrong; the message names file, key and value."""

    exit_code = 2


class UsageError(EdgepushError):
    """A command-line argument is wrong."""

    exit_code = 2


class AuthError(EdgepushError):
    """The server refused our credentials or permissions."""


class ServerRefused(AuthError):
    """The server answered what retrying cannot change: a topic it rejects (400), a missing or
    refused token (401/403), no such endpoint (404), an MQTT CONNACK refusing us. The text is
    the server's own. ``pushagent run`` stops with it at start (exit 2, which the systemd
    units do not restart); a transport that has been connected before keeps retrying at the
    backoff cap instead (a proxy mid-deploy, a token being rotated), and ``status`` says why.
    """

    exit_code = 2


class MessageError(EdgepushError):
    """One message (or request body) is malformed; the message names the field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class StoreError(EdgepushError):
    """The local database cannot be opened or used."""

    exit_code = 2


class StoreBusy(StoreError):
    """A commit failed for a reason that passes (locked, disk full): retry, ack nothing."""

    exit_code = 1


class TransportError(EdgepushError):
    """A transport could not talk to its server."""


class ConnectionLost(TransportError):
    """The connection dropped or could not be made; retry with backoff."""


class RateLimited(ConnectionLost):
    """The server answered 429; ``retry_after`` is the seconds it asked us to wait (its
    ``Retry-After``), or None when it gave none."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InvalidState(EdgepushError):
    """An operation was attempted in a state that should be impossible: a bug."""
