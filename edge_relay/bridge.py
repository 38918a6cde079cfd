"""The upstream bridge: ONE MQTT session for every local device, via the agent's transport.

Down: the transport delivers batches from ``--upstream-topic`` filters; each message's MQTT
topic is mapped to a relay topic (``edge_relay.core.mqtt_to_relay``), the batch is stored and
fanned out through the hub (one transaction), and only then does the transport PUBACK it.
A message already stored (the same id coming back down) is a no-op: no echo loop. What the
upstream sends that cannot be stored as an envelope (``1e400``, a topic the relay cannot map)
is kept raw in the store's ``rejected`` table, counted in ``/v1/health`` (``rejected``) and
``/metrics`` (``edge_relay_rejected_messages``), and acked: it never blocks what follows, and
never takes the bridge down (a failing session is logged and reconnected by the transport).

Up: a local publish whose topic matches a ``--forward`` pattern is queued in the store's
outbox in the same transaction as the message itself, with its relay-assigned id. A drainer
sends the outbox in order, one PUBACK at a time, and deletes an item only once acknowledged;
while the broker is down items wait (and survive a relay restart).

A forwarded message's file (an upload to this relay, ``/file/<id>``) must be fetchable from
the cloud side, which cannot reach a LAN address: at send time (``upstream_payload``) a file
below ``[attachments] upstream_inline_limit`` goes inline, its ``attachment.url`` a base64
``data:`` URL (``agent.ntfyproto.attachment.data_url``) that the agent turns back into a
file; a larger one keeps a URL on ``base_url`` (the relay's public address) when one is
configured, else the URL it was published with. An external ``Attach:`` URL goes as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

from agent.config import AgentConfig, MqttConfig, Paths
from agent.envelope import Message, encode_bytes
from agent.errors import ConnectionLost, EdgepushError, InvalidState, MessageError, StoreBusy
from agent.ntfyproto.attachment import FILE_PATH, data_url
from agent.store import OutboxItem, Rejected, Stored
from agent.topics import glob_match
from agent.transports import Batch, ConnState
from agent.transports.mqtt import MqttTransport
from agent.transports.mqtt_protocol import RELAY_KEY
from edge_relay.core import check_storable, mqtt_to_relay, relay_to_mqtt
from edge_relay.state import RelayState

log = logging.getLogger(__name__)


def forward_rule(patterns: tuple[str, ...]) -> Callable[[Message], str | None]:
    """``message -> MQTT topic or None`` for local messages matching a ``--forward`` glob."""

    def forward(msg: Message) -> str | None:
        if any(glob_match(p, msg.topic) for p in patterns):
            return relay_to_mqtt(msg.topic)
        return None

    return forward


class Bridge:
    """Runs the transport and the outbox drainer until cancelled."""

    def __init__(self, state: RelayState) -> None:
        cfg = state.cfg
        assert cfg.upstream is not None
        self.state = state
        client_id = state.store.meta_default(
            "upstream_client_id", lambda: f"edge-relay-{uuid.uuid4().hex[:12]}"
        )  # stable, so the broker keeps our persistent session across restarts
        data: Path = cfg.data_dir
        agent_cfg = AgentConfig(
            paths=Paths(data / "agent.toml", data, data),
            servers=(cfg.upstream,),
            notifier="none",
            max_message_size=max(64, cfg.limits.message_size * 4),
            mqtt=MqttConfig(protocol=cfg.upstream_protocol, redelivery=cfg.upstream_redelivery),
        )
        self.transport = MqttTransport(
            cfg.upstream, agent_cfg, topics=cfg.upstream_topics, client_id=client_id,
            protocol_key=RELAY_KEY,
        )  # fmt: skip
        self.transport.on_state = self._on_state
        # The LAN keeps pushing without the cloud: an upstream that refuses the relay is
        # retried at the cap and shows in /v1/health, it never ends the relay.
        self.transport.keep_retrying = True
        state.upstream.error = lambda: self.transport.last_error
        state.upstream.url = self.transport.url
        state.upstream.state = "connecting"
        self._wake = asyncio.Event()
        state.hub.on_stored.append(self._stored)

    def _on_state(self, st: ConnState) -> None:
        self.state.upstream.state = st
        self.state.metrics.upstream_up.set(1 if st == "connected" else 0)
        if st == "connected":
            self._wake.set()

    def _stored(self, stored: list[Stored], source: str) -> None:
        if source == "local":
            self._wake.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.transport.run(self._sink), name="upstream")
            tg.create_task(self._drain(), name="outbox")

    async def _sink(self, batch: Batch) -> None:
        msgs: list[Message] = []
        rejected = list(batch.rejected)
        for m in batch.messages:
            if not isinstance(m, Message):  # only a transport made with sealed_arrivals
                raise InvalidState("the bridge's MQTT transport gave an unopened message")
            try:
                local = m.with_topic(mqtt_to_relay(m.topic))
                # The hub refuses an unstorable message for the whole batch; refused here it
                # goes to `rejected` alone and the rest of the batch is stored.
                check_storable(local)
                msgs.append(local)
            except MessageError as exc:
                log.warning("upstream message %s rejected: %s", m.id, exc)
                why = f"cannot be stored at the relay: {exc}"
                rejected.append(Rejected.of(batch.source, m.topic, why, _raw(m), time.time()))
        if msgs:
            # stored + fanned out; ids kept by with_topic, so the redelivery keys still match
            await self.state.hub.publish(msgs, source="upstream", redelivery=batch.redelivery)
        if rejected:  # after the publish: a StoreBusy retry of it must not add them twice
            await asyncio.to_thread(self.state.store.add_rejected, rejected)
            self.state.note_rejected(len(rejected))

    async def _drain(self) -> None:
        store = self.state.store
        while True:
            self._wake.clear()  # before the peek: a publish after it sets it again
            try:
                items = await asyncio.to_thread(store.outbox_peek, 100, "message")
                self.state.upstream.outbox = len(items)
                self.state.metrics.outbox.set(len(items))
            except StoreBusy:
                items = []
            if not items or self.transport.state != "connected":
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                continue
            for item in items:
                try:
                    item = await asyncio.to_thread(self._outgoing, item)
                    await self.transport.publish(item)
                except ConnectionLost as exc:
                    log.info("outbox waits for the upstream: %s", exc)
                    await asyncio.sleep(0.2)  # the transport's state catches up; no spin
                    break
                except EdgepushError as exc:
                    log.warning("outbox item %d refused upstream: %s", item.seq, exc)
                    await asyncio.to_thread(store.outbox_failed, [item.seq])
                    break
                await asyncio.to_thread(store.outbox_done, [item.seq])

    def _outgoing(self, item: OutboxItem) -> OutboxItem:
        try:
            payload = upstream_payload(item.payload, self.state)
        except OSError as exc:  # the file went between the lookup and the read: as it is
            log.warning("outbox item %d: cannot read its file: %s", item.seq, exc)
            return item
        return item if payload is None else replace(item, payload=payload)


def upstream_payload(payload: str, state: RelayState) -> str | None:
    """The outbox payload with its local file made fetchable upstream (see the module
    docstring), or None when it goes as it is."""
    try:
        obj = json.loads(payload)
    except ValueError:
        return None
    att = obj.get("attachment") if isinstance(obj, dict) else None
    if not isinstance(att, dict):
        return None
    url = att.get("url")
    path_part = urlsplit(url).path if isinstance(url, str) else ""
    found = FILE_PATH.fullmatch(path_part[path_part.rfind("/file/") :])
    if found is None or found.group(1) != obj.get("id"):
        return None  # not this message's upload: an external URL goes as it is
    path = state.files.path(found.group(1))
    if path is None:
        return None  # expired or gone: the cloud gets the URL, which answers 404
    cfg = state.cfg
    size = path.stat().st_size
    if size < cfg.attachments.upstream_inline_limit:
        att["url"] = data_url(str(att.get("type") or ""), path.read_bytes())
    elif cfg.base_url:
        att["url"] = cfg.base_url.rstrip("/") + found.group(0)
    else:
        return None
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _raw(msg: Message) -> bytes:
    """The message as it can best be kept: its envelope, or its repr if even that fails."""
    try:
        return encode_bytes(msg)
    except ValueError:
        return repr(msg).encode("utf-8", "backslashreplace")
