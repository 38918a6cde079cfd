"""Retained MQTT messages without an id: stored once, not again at every reconnect.

Part of the store (``Store.insert_batch``, through ``schema._redelivered``). The agent
SUBSCRIBEs at every (re)connect, and a broker MUST then send the retained message of each
matching topic again, with RETAIN set (MQTT 3.1.1 §3.8.4, MQTT 5 §3.3.1.3): a plain-text one
has no id to dedupe by, so each copy was stored and shown as new, once per reconnect.

The rule (docs/MQTT.md, *Retained messages*): a PUBLISH that arrives with RETAIN set at QoS 1
(``Redelivery.retained``), in a broker session the agent has been in all along, takes the id of
the last id-less message stored from the same server on the same topic in that session when
its bytes are the same. Why that never drops a message that could be new:

* RETAIN is set only on a copy sent because of a SUBSCRIBE; a message that matches an
  established subscription is delivered with RETAIN clear (3.1.1 §3.3.1.3; MQTT 5 with Retain
  As Published off, as the agent subscribes). Measured on mosquitto 2.0, RabbitMQ 3.10 and
  NATS 2.9 (tests/test_mqtt_retained.py).
* In one session our subscriptions stay (the agent never UNSUBSCRIBEs), so every QoS 1
  message published on the topic since the last one stored reached us, or is queued for us,
  as a delivery of its own: the message that set the retained value among them. The copy
  repeats a message we have, or one that comes anyway. At QoS 0 the broker queues nothing
  for an agent that is away (mosquitto): the copy may be the value's only delivery, so a QoS
  0 copy is always kept.
* The same bytes as the last one stored guards the rest: a broker that dropped queued
  messages (mosquitto's ``max_queued_messages``) still gets a changed value through. Not a
  re-publish of the same bytes that such a broker dropped: its copy is taken for the old one
  (the limit docs/MQTT.md states, measured there).
* ``session`` is a token the transport makes whenever the broker says the session is new
  (CONNACK session present 0) or ``[mqtt] qos`` changed, or may have begun one unseen
  (``agent.transports.mqtt_session``): rows of an older session, whose subscriptions may have
  differed, never match (nor those of a QoS 0 subscription, under which nothing was queued).

MQTT 5's Retain Handling 1 ("send retained messages only for a new subscription") would let
the broker skip these copies, but it also skips a QoS 0 retained value published while the
agent was away, which mosquitto does not queue: lost. So the agent subscribes with 0.

One row per (server, topic); a batch writes each topic's row once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from agent.envelope import Message
from agent.store import schema  # a cycle (schema imports this module): used at call time only

if TYPE_CHECKING:
    from agent.store.schema import Redelivery

Last = dict[str, tuple[str, bytes, str]]
"""Topic -> (session token, digest, message id) of the last id-less message stored on it."""


def lookup(conn: sqlite3.Connection, source: str, keys: Iterable[Redelivery]) -> Last:
    """The rows of the topics that retained copies in ``keys`` arrived on."""
    topics = sorted({k.topic for k in keys if k.retained and k.session is not None})
    last: Last = {}
    for chunk in schema.chunks(topics):
        rows = conn.execute(
            "SELECT topic, session, digest, id FROM mqtt_retained WHERE source = ? AND "
            f"topic IN ({schema.placeholders(chunk)})",
            [source, *chunk],
        )
        last.update((str(t), (str(s), bytes(d), str(mid))) for t, s, d, mid in rows)
    return last


def match(m: Message, key: Redelivery, last: Last) -> Message:
    """``m`` with the id of the message it is a retained copy of, if it is one; ``last`` then
    names ``m`` (with its final id) as the last one on its topic (this batch's later ones
    see it)."""
    assert key.session is not None
    old = last.get(key.topic)
    if key.retained and old is not None and old[0] == key.session and old[1] == key.digest:
        m = replace(m, id=old[2])
    last[key.topic] = (key.session, key.digest, m.id)
    return m


def record(conn: sqlite3.Connection, source: str, last: Last, topics: Iterable[str]) -> None:
    """Write the rows of ``topics`` (in the batch's transaction)."""
    rows = [(source, t, *last[t]) for t in topics]
    if rows:
        conn.executemany("INSERT OR REPLACE INTO mqtt_retained VALUES (?, ?, ?, ?, ?)", rows)
