"""Decrypting on receipt (the agent's sink, before the store and the notifier) and again
after a key import (``pushagent key import`` re-tries the stored undecryptable messages).

The keys are read once at start (only topics in the key index touch the keyring); a message
whose kid is unknown re-reads them if the index changed since (a ``key import`` while the
agent runs), so the next message with the new key opens without a restart.

The stored ones: ``pushagent key import`` decrypts a topic's undecryptable messages in place
(``retry_stored``). A running agent remembers the ids it stored undecryptable; when the key
index changes it decrypts what is still undecryptable itself and hands every one of those
ids that is readable now -- whoever decrypted it -- to the notifier again
(``Decryptor.reopened``), so the user sees the text, not only ``pushagent history``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, cast

from agent.config import AgentConfig
from agent.e2e import seal
from agent.e2e.keystore import KeyFileError, KeyStore
from agent.e2e.seal import Arrived
from agent.envelope import Message
from agent.errors import ConfigError, MessageError
from agent.store.sealed import OPENED, UNDECRYPTABLE, Sealed

if TYPE_CHECKING:
    from agent.store import Store, Stored

log = logging.getLogger("pushagent.e2e")
_NO_KEYS: Mapping[str, bytes] = {}


class Decryptor:
    """Opens the sealed messages of a batch with this installation's keys."""

    def __init__(self, cfg: AgentConfig) -> None:
        self._keystore = KeyStore(cfg)
        self._keys: dict[str, dict[str, bytes]] = {}
        self._stamp = -1.0
        self.pending: set[str] = set()
        """Ids stored undecryptable by this agent (re-shown once readable)."""
        self._reopen_stamp: float | None = None  # the index as ``reopened`` last saw it

    def load(self, *, strict: bool = False) -> None:
        """(Re)read the keys. ``strict`` (the agent's start): a key file others can read is
        refused with KeyFileError, as a password file is. Anything else -- a keyring that is
        locked or gone -- is logged and leaves those topics' messages undecryptable: they
        are still stored, shown as encrypted, and opened after a key import."""
        self._stamp = self._keystore.stamp()
        if self._reopen_stamp is None:
            self._reopen_stamp = self._stamp
        try:
            self._keys = self._keystore.all_keys()
        except KeyFileError:
            if strict:
                raise
            log.warning("E2E keys not reloaded: the key file is unusable")
        except ConfigError as exc:
            log.warning("E2E keys not loaded: %s", exc)
            self._keys = {}

    def open_batch(
        self, messages: Sequence[Message | Arrived]
    ) -> tuple[Sequence[Message], list[Sealed | None] | None]:
        """``messages`` with the sealed ones opened (or stand-ins), and per message how it
        arrived (``Sealed`` or None: ``Store.insert_batch(encrypted=...)``); None when none
        arrived sealed (the common, clear case costs one look at each message). A sealed
        one is a Message (``seal.is_sealed``) or, from the MQTT transport, ``Arrived``."""
        if not any(isinstance(m, Arrived) or seal.is_sealed(m) for m in messages):
            return cast("Sequence[Message]", messages), None
        out: list[Message] = []
        marks: list[Sealed | None] = []
        keys = self._keys
        for m in messages:
            try:
                if isinstance(m, Arrived):
                    out.append(seal.decrypted_arrival(m, keys.get(m.topic, _NO_KEYS)))
                    marks.append(OPENED)
                    continue
                if not seal.is_sealed(m):
                    out.append(m)
                    marks.append(None)
                    continue
                out.append(seal.decrypted(m, keys.get(m.topic, _NO_KEYS))[0])
                marks.append(OPENED)
                continue
            except MessageError as exc:
                m = m.outside() if isinstance(m, Arrived) else m
                opened = seal.refused(m, exc)
            if self._reload_for(m.topic, opened.kid):
                keys = self._keys
                opened = seal.open_message(m, keys.get(m.topic, _NO_KEYS))
            if opened.ciphertext is not None:
                missing = opened.kid is not None and opened.kid not in keys.get(m.topic, {})
                hint = f" (import it: pushagent key import {m.topic} STRING)" if missing else ""
                log.info("message %s on %s is undecryptable: %s%s", m.id, m.topic, opened.reason,
                         hint)  # fmt: skip
            out.append(opened.message)
            marks.append(Sealed(opened.ciphertext) if opened.ciphertext is not None else OPENED)
        return out, marks

    def _reload_for(self, topic: str, kid: str | None) -> bool:
        if kid is None or kid in self._keys.get(topic, {}):
            return False  # refused or tampered: a reload would not help
        if self._keystore.stamp() == self._stamp:
            return False
        self.load()
        return kid in self._keys.get(topic, {})

    def note(self, stored: Sequence[Stored]) -> None:
        """Remember the undecryptable ones among freshly stored messages."""
        self.pending.update(s.message.id for s in stored if s.state == UNDECRYPTABLE)

    def changed(self) -> bool:
        """Whether the key index moved since ``reopened`` last ran (a reload for a new
        message's kid does not count: the stored ones still need their look)."""
        return self._keystore.stamp() != self._reopen_stamp

    def reopened(self, store: Store) -> list[Stored]:
        """After a key change: reload, decrypt the stored undecryptable messages in place,
        and return the remembered ones that are readable now (in a worker thread)."""
        self._reopen_stamp = self._keystore.stamp()
        self.load()
        reopen(store, self._keys)
        out = []
        for mid in sorted(self.pending):
            row = store.get(mid)
            if row is None or row.state != UNDECRYPTABLE:
                self.pending.discard(mid)  # pruned, or readable now
                if row is not None:
                    out.append(row)
        return sorted(out, key=lambda s: s.seq)


def reopen(store: Store, keys: Mapping[str, Mapping[str, bytes]], topic: str | None = None) -> int:
    """Decrypt stored undecryptable messages (of ``topic``, or all) that ``keys`` open, in
    place; how many changed."""
    done = []
    for stored, token in store.undecryptable(topic):
        found = keys.get(stored.message.topic, {})
        if found:
            opened = seal.open_message(replace(stored.message, message=token), found)
            if opened.ciphertext is None:
                done.append(opened.message)
    return store.decrypted(done)


def retry_stored(cfg: AgentConfig, topic: str) -> tuple[int, int]:
    """Decrypt ``topic``'s stored undecryptable messages in place with the keys now there;
    ``(decrypted, still undecryptable)``."""
    from agent.store import Store

    found = dict(KeyStore(cfg).keys(topic))
    if not cfg.paths.db.exists():
        return 0, 0
    with Store(cfg.paths.db) as store:
        changed = reopen(store, {topic: found}, topic)
        still = len(store.undecryptable(topic))
    return changed, still
