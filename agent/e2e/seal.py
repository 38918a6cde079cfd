"""A Message's two halves: the routing outside, the envelope sealed inside a JWE. No I/O.

Outside, readable by every server on the way: ``topic``, ``id``, ``time``, ``expires``,
``sequence_id`` (ntfy 2.16: which notification an update replaces), and ``priority`` only
when the publisher chose to expose it (quiet hours at the relay). Inside: the envelope --
title, message, priority, tags, click, actions, attachment metadata, content type, extras --
and the topic again, so a ciphertext moved to another topic that shares its key does not open.

On receipt ``open_message`` gives the message to store and show: the decrypted envelope under
the outer id/time, or, when it cannot be opened (no key, wrong key, tampered, refused), a
stand-in "encrypted message on TOPIC" with the ciphertext kept beside it for a later key
import. Tampered text is never shown: AES-GCM opens all of it or nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from agent.e2e import files, jwe
from agent.envelope import (
    MAX_ID_LENGTH,
    MAX_TOPIC_LENGTH,
    Message,
    decode_object,
    encode,
    from_fields,
)
from agent.errors import MessageError

ROUTING = ("id", "time", "expires", "topic")
KEEP_OUTSIDE = ("sequence_id",)  # routing extras a relay needs (and reads) in the clear


@dataclass(frozen=True, slots=True)
class Opened:
    """What arrived encrypted, as it is stored: ``ciphertext`` is None once decrypted."""

    message: Message
    ciphertext: str | None = None
    reason: str | None = None
    kid: str | None = None


def inside(msg: Message) -> dict[str, Any]:
    """The envelope fields that go into the JWE (everything but the routing outside)."""
    body = encode(msg)
    for name in ("id", "time", "expires", *KEEP_OUTSIDE):
        body.pop(name, None)
    return body


def seal_text(msg: Message, key: bytes, kid: str) -> str:
    """The JWE compact string for ``msg`` (an HTTP publish's body)."""
    return jwe.encrypt(inside(msg), key, kid)


def seal(msg: Message, key: bytes, kid: str, *, expose_priority: bool = False) -> dict[str, Any]:
    """The outer envelope of ``msg`` for MQTT: routing fields, ``message`` the JWE and
    ``encoding: jwe`` (docs/E2E.md)."""
    outer: dict[str, Any] = {"id": msg.id, "time": msg.time, "topic": msg.topic}
    if msg.expires is not None:
        outer["expires"] = msg.expires
    for name in KEEP_OUTSIDE:
        if name in msg.extra:
            outer[name] = msg.extra[name]
    if expose_priority:
        outer["priority"] = msg.priority
    outer["message"] = seal_text(msg, key, kid)
    outer["encoding"] = jwe.ENCODING
    return outer


def is_sealed(msg: Message) -> bool:
    """Whether ``msg`` arrived encrypted: ``encoding: jwe``, ``content_type:
    application/jose``, or (a server that kept neither) a message shaped like a JWE."""
    return (
        msg.extra.get("encoding") == jwe.ENCODING
        or msg.content_type == jwe.CONTENT_TYPE
        or jwe.looks_like(msg.message)
    )


def stand_in(msg: Message) -> Message:
    """What is shown for an encrypted message that cannot be opened: never its contents.
    The server's attachment object (an encrypted file's location, nothing the server does
    not know) is kept for a later key import; undecryptable messages are not downloaded."""
    return Message(
        id=msg.id, time=msg.time, topic=msg.topic, expires=msg.expires,
        message=f"encrypted message on {msg.topic}", priority=msg.priority,
        attachment=msg.attachment, extra=_outside_extras(msg),
    )  # fmt: skip


def open_message(msg: Message, keys: Mapping[str, bytes]) -> Opened:
    """Decrypt a sealed ``msg`` with its topic's ``keys`` (kid -> key); see the docstring."""
    try:
        return Opened(*decrypted(msg, keys))
    except MessageError as exc:
        return refused(msg, exc)


def decrypted(msg: Message, keys: Mapping[str, bytes]) -> tuple[Message, None, None, str]:
    """``open_message``'s fields for a ``msg`` that opens (message, ciphertext None, reason
    None, kid) without its ``Opened`` (the receive path's hot loop); MessageError if not."""
    body, kid = jwe.open_token(msg.message, keys)
    if body.get("topic", msg.topic) != msg.topic:
        raise jwe.DecryptError("JWE was sealed for another topic", kid)
    return opened(msg, body), None, None, kid


def refused(msg: Message, exc: MessageError) -> Opened:
    """What a sealed ``msg`` that did not open (``exc``) is stored as: its stand-in."""
    token = msg.message
    named = exc.kid if isinstance(exc, jwe.DecryptError) else _kid(token)
    return Opened(stand_in(msg), ciphertext=token, reason=str(exc), kid=named)


_INSIDE_ONLY = frozenset((*ROUTING, *KEEP_OUTSIDE))
_KEEP = frozenset(KEEP_OUTSIDE)


def opened(outer: Message, body: Mapping[str, Any]) -> Message:
    """The decrypted envelope ``body`` under ``outer``'s routing fields; MessageError."""
    fields = _inner(body, outer.attachment)
    if not _KEEP.isdisjoint(outer.extra):
        fields.update(_outside_extras(outer))
    fields["id"] = outer.id
    fields["time"] = outer.time
    if outer.expires is not None:
        fields["expires"] = outer.expires
    return from_fields(fields, topic=outer.topic)


def _inner(body: Mapping[str, Any], attachment: dict[str, Any] | None) -> dict[str, Any]:
    """``body``'s envelope fields without the routing ones (the outside's are used)."""
    fields = dict(body)
    for name in _INSIDE_ONLY.intersection(body):  # a sealer's ``inside`` has only the topic
        del fields[name]
    if isinstance(fields.get("attachment"), dict):  # an encrypted file: the server's URL
        fields["attachment"] = files.located(fields["attachment"], attachment)
    return fields


class Arrived(NamedTuple):
    """A sealed message as it arrived, not yet a Message (``arrival``): its outside, checked
    as ``from_fields`` checks it, is only routing and the JWE, so the receiver opens it into
    the one Message it stores (``decrypted_arrival``) without an outer one to throw away."""

    id: str
    time: int
    topic: str
    message: str  # the JWE compact token

    def outside(self) -> Message:
        """The Message ``decode`` makes of it: what a receiver shows (``stand_in``) and stores
        beside its ciphertext when it does not open."""
        fields = {"id": self.id, "time": self.time, "message": self.message}
        return from_fields({**fields, "encoding": jwe.ENCODING}, topic=self.topic)


_ARRIVED = frozenset(("id", "time", "topic", "message", "encoding"))


def arrival(payload: bytes | str, *, topic: str, max_size: int) -> Message | Arrived:
    """``decode``, but a sealed message whose outside is just its routing (id, time, topic,
    the JWE and ``encoding: jwe``; what ``seal`` writes) comes back as ``Arrived``. Its
    fields pass exactly the checks ``from_fields`` would make, so ``Arrived.outside`` never
    raises; anything else is decoded as before (MessageError for what decode refuses)."""
    obj = decode_object(payload, topic=topic, max_size=max_size)
    if isinstance(obj, Message):
        return obj
    if obj.get("encoding") != jwe.ENCODING:  # a clear envelope: one look
        return from_fields(obj, topic=topic)
    mid, t, token = obj.get("id"), obj.get("time"), obj.get("message")
    if (
        _ARRIVED.issuperset(obj) and type(mid) is str and 0 < len(mid) <= MAX_ID_LENGTH
        and mid.isascii() and mid.isalnum() and type(t) is int and 0 <= t < 2**53
        and type(token) is str and len(topic) <= MAX_TOPIC_LENGTH and topic.isprintable()
    ):  # fmt: skip
        return Arrived(mid, t, topic, token)
    return from_fields(obj, topic=topic)


def decrypted_arrival(sealed: Arrived, keys: Mapping[str, bytes]) -> Message:
    """``decrypted``'s message for an ``Arrived`` (no attachment or extras outside, so
    the same Message ``decrypted(sealed.outside(), keys)`` gives); MessageError if not."""
    body, kid = jwe.open_token(sealed.message, keys)
    if body.get("topic", sealed.topic) != sealed.topic:
        raise jwe.DecryptError("JWE was sealed for another topic", kid)
    fields = _inner(body, None)
    fields["id"] = sealed.id
    fields["time"] = sealed.time
    return from_fields(fields, topic=sealed.topic)


def _outside_extras(msg: Message) -> dict[str, Any]:
    return {k: msg.extra[k] for k in KEEP_OUTSIDE if k in msg.extra}


def _kid(token: str) -> str | None:
    try:
        return str(jwe.header(token)["kid"])
    except jwe.DecryptError as exc:
        return exc.kid
