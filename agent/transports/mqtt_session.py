"""The token of the broker session the agent is in: ``<data dir>/mqtt-session.json``.

A retained copy may take the id of the last message stored on its topic only within one broker
session (``agent.store.retained``), so the token must change whenever the session may have.
The broker begins a session when it accepts a CONNECT, before the agent reads the CONNACK, and
the agent can be killed in between: a token written only after the CONNACK (session present 0)
was then the old session's, and the next CONNACK said "present" of the session the dead attempt
had begun, without the agent's subscriptions for a while. A retained value published in that
while has its copy as its only delivery, and the old token matched the rows of the value stored
before: lost (tests/test_mqtt_retained.py). So:

* ``begin``, called as the socket opens and before the CONNECT is sent (paho's
  ``on_socket_open``), marks the token *pending*, synced. A token still pending at the next
  ``begin`` is void: an attempt got no further than its CONNECT and may have begun a session.
* ``settle``, at an accepted CONNACK, keeps the token when the session is resumed (and it is
  not void, and is for the same client id and ``[mqtt] qos``), else makes a new one; either way
  it clears *pending*, synced, before the SUBSCRIBEs.

One token for all servers of this data dir (the agent has one client id): nodes of one broker
cluster share a session, so a new session begun through one node must void the token of the
others. For independent brokers this only keeps a copy more after a switch.

A ``[mqtt] qos`` change voids it too: a QoS 1 message published while the agent was
subscribed at 0 was not queued for it, so its retained copy may be its only delivery.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import uuid
from pathlib import Path

log = logging.getLogger("pushagent.mqtt")

SESSION_FILE = "mqtt-session.json"


class SessionToken:
    """``<data dir>/mqtt-session.json``: {"token", "client", "qos", "pending"}."""

    def __init__(self, data_dir: Path, client_id: str, qos: int) -> None:
        self.path = data_dir / SESSION_FILE
        self.client_id = client_id
        self.qos = qos

    def _read(self) -> dict[str, object]:
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return raw if isinstance(raw, dict) else {}

    def begin(self) -> bool:
        """Before a CONNECT: mark the token pending (a pending one is void). False: it could not
        be written, and the CONNECT must not be sent."""
        data = self._read()
        if data.get("pending"):
            data.pop("token", None)  # the last attempt may have begun a session: void
        data["pending"] = True
        return self._write(data)

    def settle(self, *, resumed: bool) -> str | None:
        """At an accepted CONNACK: the session's token (kept or new), written before the
        SUBSCRIBEs. None when it cannot be written: retained copies are then all kept, and the
        token stays pending, so void at the next attempt."""
        data = self._read()
        token = data.get("token")
        same = data.get("client") == self.client_id and data.get("qos") == self.qos
        if not (resumed and same and isinstance(token, str) and token):
            token = uuid.uuid4().hex
        new = {"token": token, "client": self.client_id, "qos": self.qos, "pending": False}
        return token if self._write(new) else None

    def _write(self, data: dict[str, object]) -> bool:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".mqtt-session.")
            try:
                with os.fdopen(fd, "w") as f:  # mkstemp makes it 0600
                    json.dump(data, f, sort_keys=True)
                    f.flush()
                    os.fsync(f.fileno())  # the mark must outlive a power cut ...
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            dirfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dirfd)  # ... and so must the rename
            finally:
                os.close(dirfd)
        except OSError as exc:
            log.warning("cannot write the MQTT session token %s: %s", self.path, exc)
            return False
        return True
