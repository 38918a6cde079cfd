"""Decrypting on receipt (the agent's sink, before the store and the notifier) and again
after a key import (``pushagent key import`` re-tries the stored undecryptable messages).

The keys are read once at start (only topics in the key index touch the keyring); a message
whose kid is unknown re-reads them if the index changed since (a ``key import`` while the
agent runs), so the next message with the new key opens without a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from agent.config import AgentConfig
from agent.e2e import seal
from agent.e2e.keystore import KeyFileError, KeyStore
from agent.envelope import Message
from agent.errors import ConfigError
from agent.store.sealed import Sealed

log = logging.getLogger("pushagent.e2e")


class Decryptor:
    """Opens the sealed messages of a batch with this installation's keys."""

    def __init__(self, cfg: AgentConfig) -> None:
        self._keystore = KeyStore(cfg)
        self._keys: dict[str, dict[str, bytes]] = {}
        self._stamp = -1.0

    def load(self, *, strict: bool = False) -> None:
        """(Re)read the keys. ``strict`` (the agent's start): a key file others can read is
        refused with KeyFileError, as a password file is. Anything else -- a keyring that is
        locked or gone -- is logged and leaves those topics' messages undecryptable: they
        are still stored, shown as encrypted, and opened after a key import."""
        self._stamp = self._keystore.stamp()
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
        self, messages: Sequence[Message]
    ) -> tuple[Sequence[Message], list[Sealed | None] | None]:
        """``messages`` with the sealed ones opened (or stand-ins), and per message how it
        arrived (``Sealed`` or None: ``Store.insert_batch(encrypted=...)``); None when none
        arrived sealed (the common, clear case costs one look at each message)."""
        if not any(seal.is_sealed(m) for m in messages):
            return messages, None
        out: list[Message] = []
        marks: list[Sealed | None] = []
        for m in messages:
            if not seal.is_sealed(m):
                out.append(m)
                marks.append(None)
                continue
            opened = seal.open_message(m, self._keys.get(m.topic, {}))
            if opened.ciphertext is not None and self._reload_for(m.topic, opened.kid):
                opened = seal.open_message(m, self._keys.get(m.topic, {}))
            if opened.ciphertext is not None:
                log.info("message %s on %s is undecryptable: %s", m.id, m.topic, opened.reason)
            out.append(opened.message)
            marks.append(Sealed(opened.ciphertext))
        return out, marks

    def _reload_for(self, topic: str, kid: str | None) -> bool:
        if kid is None or kid in self._keys.get(topic, {}):
            return False  # refused or tampered: a reload would not help
        if self._keystore.stamp() == self._stamp:
            return False
        self.load()
        return kid in self._keys.get(topic, {})


def retry_stored(cfg: AgentConfig, topic: str) -> tuple[int, int]:
    """Decrypt ``topic``'s stored undecryptable messages in place with the keys now there;
    ``(decrypted, still undecryptable)``."""
    from agent.store import Store

    found = dict(KeyStore(cfg).keys(topic))
    if not cfg.paths.db.exists():
        return 0, 0
    with Store(cfg.paths.db) as store:
        pending = store.undecryptable(topic)
        done = []
        for stored, token in pending:
            opened = seal.open_message(replace(stored.message, message=token), found)
            if opened.ciphertext is None:
                done.append(opened.message)
        changed = store.decrypted(done)
    return changed, len(pending) - changed
