"""``pushagent key new|import|export|list``: the keys of end-to-end encrypted topics.

Keys are never command-line flags one could read in ``ps``: a passphrase is prompted for
(or read from stdin when it is not a terminal); ``key import TOPIC -`` reads the key from
stdin too. ``key export`` is the one command that prints a key: on purpose, to be copied.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING

from agent.commands import common, load_config
from agent.errors import UsageError

if TYPE_CHECKING:
    from agent.e2e.keystore import KeyStore


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "key",
        help="keys of end-to-end encrypted topics",
        description="Make, import, export and list the keys of encrypted topics "
        "(docs/E2E.md). Keys live in the OS keyring, or in a 0600 file where none is usable.",
    )
    cmds = p.add_subparsers(dest="key_command", metavar="ACTION")
    cmds.required = True
    new = common(cmds.add_parser("new", help="make a key for TOPIC (it becomes the current)"))
    new.add_argument("topic", metavar="TOPIC")
    new.add_argument(
        "--passphrase",
        action="store_true",
        help="derive it from a passphrase (prompted for, or one line of stdin): "
        "PBKDF2-SHA256, 600,000 iterations",
    )
    new.set_defaults(func=key_new)
    imp = common(cmds.add_parser("import", help="add a key someone exported for TOPIC"))
    imp.add_argument("topic", metavar="TOPIC")
    imp.add_argument("key", metavar="STRING", help="what 'key export' printed, or - for stdin")
    imp.set_defaults(func=key_import)
    exp = common(cmds.add_parser("export", help="print TOPIC's current key, to copy"))
    exp.add_argument("topic", metavar="TOPIC")
    exp.add_argument("--kid", help="an older key, by its id")
    exp.set_defaults(func=key_export)
    lst = common(cmds.add_parser("list", help="topics and key ids (never the keys)"))
    lst.set_defaults(func=key_list)


def _store(args: argparse.Namespace) -> KeyStore:
    from agent.e2e.keystore import KeyStore

    return KeyStore(load_config(args))


def _topic(text: str) -> str:
    from agent.envelope import check_topic
    from agent.errors import MessageError

    try:
        if not text:
            raise MessageError("must not be empty")
        return check_topic(text)
    except MessageError as exc:
        raise UsageError(f"TOPIC: {exc}") from None


def key_new(args: argparse.Namespace) -> int:
    from agent.e2e import keys

    topic = _topic(args.topic)
    if args.passphrase:
        try:
            key = keys.from_passphrase(_passphrase(topic), topic)
        except ValueError as exc:
            raise UsageError(f"--passphrase: {exc}") from None
    else:
        key = keys.new_key()
    store = _store(args)
    before = _current(store, topic)
    kid, where = store.add(topic, key)
    print(f"{topic}: new key {kid} ({where}); copy it with: pushagent key export {topic}"
          + _replaced(before, kid), file=sys.stderr)  # fmt: skip
    return 0


def _current(store: KeyStore, topic: str) -> str | None:
    entry = store.index().get(topic)
    return entry.kids[0] if entry is not None and entry.kids else None


def _replaced(before: str | None, kid: str) -> str:
    """Said when ``kid`` took the place of another current key (what send --encrypt uses)."""
    if before is None or before == kid:
        return ""
    return f"; it replaces {before} as the current key (the one send --encrypt uses)"


def _passphrase(topic: str) -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"Passphrase for {topic}: ")
    if getpass.getpass("Again: ") != first:
        raise UsageError("--passphrase: the two passphrases differ; nothing stored")
    return first


def key_import(args: argparse.Namespace) -> int:
    from agent.e2e import keys

    topic = _topic(args.topic)
    text = sys.stdin.readline() if args.key == "-" else args.key
    try:
        key = keys.parse(text)
    except ValueError as exc:
        raise UsageError(f"STRING: {exc}") from None
    cfg = load_config(args)
    from agent.e2e.keystore import KeyStore

    store = KeyStore(cfg)
    before = _current(store, topic)
    kid, where = store.add(topic, key)
    print(f"{topic}: imported key {kid} ({where})" + _replaced(before, kid), file=sys.stderr)
    from agent.e2e.receive import retry_stored

    opened, still = retry_stored(cfg, topic)
    if opened or still:
        print(f"{topic}: decrypted {opened} stored message(s), {still} still undecryptable",
              file=sys.stderr)  # fmt: skip
    return 0


def key_export(args: argparse.Namespace) -> int:
    from agent.e2e import keys

    topic = _topic(args.topic)
    found = held = _store(args).keys(topic)
    if args.kid is not None:
        found = [(k, v) for k, v in held if k == args.kid]
    if not found and held:
        raise UsageError(f"{topic}: no key {args.kid!r} here; its key ids: pushagent key list")
    if not found:
        raise UsageError(
            f"{topic}: no key here; import the one exported on another device"
            f" (pushagent key import {topic} STRING) or make one (pushagent key new {topic})"
        )
    print(keys.export(found[0][1]))
    return 0


def key_list(args: argparse.Namespace) -> int:
    index = _store(args).index()
    for topic in sorted(index):
        entry = index[topic]
        for i, kid in enumerate(entry.kids):
            print(f"{topic}\t{kid}\t{entry.where}" + ("\tcurrent" if i == 0 else ""))
    if not index:
        hint = "import one (pushagent key import TOPIC STRING)"
        hint += " or make one (pushagent key new TOPIC)"
        print(f"no keys: {hint}", file=sys.stderr)
    return 0
