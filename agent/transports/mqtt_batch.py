"""The decode half of ``agent.transports.mqtt``: what one read of PUBLISHes becomes, as one
``Batch`` (no I/O: the transport commits it, then sends the PUBACKs).

Each packet becomes a synced state (a topic under the state prefix; agent.states), a message,
or, when its topic is not UTF-8 or its payload does not decode, a raw ``Rejected`` row stored
in the batch's transaction and acked with it, so it never stalls the others.

A message without an id of its own (plain text) is given one at decode; its packet id (when
the broker's packet ids prove a resend: ``mqtt_redelivery.RedeliveryTrust``) and a digest of
topic and payload go into ``batch.redelivery`` with the broker session, so a resend (DUP set)
after a crash between commit and PUBACK, or a retained copy sent again at a reconnect's
SUBSCRIBE (``agent.store.retained``), gets the same id back (``Store.insert_batch`` lists the
corner cases).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable

from agent.e2e.seal import Arrived, arrival
from agent.envelope import Message, decode
from agent.errors import MessageError
from agent.ntfyproto.attachment import INLINE_URL_MAX
from agent.states import from_payload
from agent.store import Redelivery, Rejected
from agent.transports import Batch, RejectLog, mqtt_codec
from agent.transports.mqtt_redelivery import RedeliveryTrust
from agent.transports.paho_conn import Received


def to_batch(
    msgs: Iterable[Received],
    *,
    source: str,
    max_size: int,
    state_prefix: str | None,
    trust: RedeliveryTrust,
    session: str | None,
    rejects: RejectLog,
    sealed_arrivals: bool = False,
) -> tuple[Batch, int]:
    """``msgs`` (in receive order) as one batch from ``source``, and how many of its messages
    arrived with DUP set. ``trust`` observes each QoS 1 packet id as it comes; ``session`` is
    the broker session's token (``mqtt_session``), None when there is none.
    ``sealed_arrivals``: a sealed message goes in as ``Arrived`` (agent.e2e.seal.arrival)."""
    dec: Callable[..., Message | Arrived] = arrival if sealed_arrivals else decode
    batch = Batch(source=source)
    dups = 0
    states = f"{state_prefix}/" if state_prefix else None
    for mid, qos, dup, retain, topic, payload in msgs:
        if qos > 0:
            trust.observe(mid, dup)
        try:
            if topic is None:
                raise MessageError("the topic is not valid UTF-8", field="topic")
            if states is not None and topic.startswith(states):
                batch.states.append(from_payload(topic[len(states) :], payload))
                continue
            text = mqtt_codec.unpack(payload, max_size + INLINE_URL_MAX)
            m = dec(text, topic=topic, max_size=max_size)
        except MessageError as exc:
            item = Rejected.of(source, topic, str(exc), payload, time.time())
            batch.rejected.append(item)
            rejects.note(source, item)
            continue
        batch.messages.append(m)
        dups += dup
        # Id-less means decode made the id up: a fresh random id cannot occur in the
        # payload, a payload's own id does (unless \u-escaped; then the record maps the
        # message to its own id, which is harmless).
        if m.id.encode() in text:
            continue
        pid = mid if qos > 0 and trust.trusted else None
        if pid is not None or session is not None:  # agent.store.retained
            batch.redelivery[m.id] = Redelivery(
                pid, _digest(topic, payload), dup, topic, session, retain and qos > 0
            )
    return batch, dups


def _digest(topic: str, payload: bytes) -> bytes:
    h = hashlib.blake2b(topic.encode(), digest_size=16)
    h.update(b"\0")  # MQTT topics cannot contain NUL: topic and payload never run together
    h.update(payload)
    return h.digest()
