"""ntfy's HTTP protocol as a pure, I/O-free package (h11-style): no sockets, no asyncio.

Theory of operation
-------------------
ntfy's server reads every publish option the same way (``readParam`` in its
``server/util.go``): for a list of names, the first non-empty *header* among them, else the
first non-empty *query parameter* among the same names lowercased. ``fields.py`` holds those
lists as one table, copied in order from ntfy's ``server/server.go``. ``publish.py`` turns the
parts of a request (headers, query, body) into envelope fields the way
``parsePublishParams``/``handlePublishBody`` do; a JSON publish to ``/`` is first rewritten
into ``X-`` headers as ntfy's ``transformBodyJSON`` does, so JSON and headers merge exactly
as on ntfy (a non-empty JSON field replaces the header, an absent one leaves it).
``actions.py`` is the ``Actions`` grammar (``parseActions`` in ``server/actions.go``),
``since.py`` the ``since=`` rule (``parseSince``), and ``errors.py`` ntfy's numbered errors
(``server/errors.go``).

Each of them raises ``NtfyError`` (a ``MessageError`` carrying ntfy's code, HTTP status and
documentation link) and nothing else. Where ntfy's documentation and its server disagree, the
server is followed and the place says so ("server, not docs").

Used by the relay's publish handlers (``edge_relay.server``) and, later, by the agent's HTTP
``send``; it imports only ``agent.envelope`` and ``agent.errors`` (the agent never imports
``edge_relay``).
"""

from __future__ import annotations

from agent.ntfyproto.errors import NtfyError

__all__ = ["NtfyError"]
