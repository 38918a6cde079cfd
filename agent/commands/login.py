"""``pushagent login SERVER --user U`` / ``--token-stdin`` and ``pushagent logout SERVER``.

MQTT brokers take a user and password; ntfy-compatible servers and relays take an access token
(``edge-relay token add``), read from stdin and sent as ``Authorization: Bearer``.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from agent import secrets
from agent.commands import common, load_config
from agent.errors import UsageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "login",
        help="store a server password in the OS keyring",
        description="Store the password for SERVER in the OS keyring (on a machine without "
        "one: in a 0600 file in the config folder). The password is read from stdin when it "
        "is not a terminal, else prompted for (never a command-line flag).",
    )
    common(p)
    p.add_argument(
        "server", metavar="SERVER", help="e.g. mqtts://broker.example.com or http://relay:8080"
    )
    p.add_argument("--user", help="user name at the server (MQTT)")
    p.add_argument(
        "--token-stdin",
        action="store_true",
        help="read an access token from stdin (relays and ntfy servers)",
    )
    p.set_defaults(func=login)
    q = sub.add_parser(
        "logout", help="remove a stored password", description="Forget SERVER's password."
    )
    common(q)
    q.add_argument("server", metavar="SERVER")
    q.set_defaults(func=logout)


def login(args: argparse.Namespace) -> int:
    if args.token_stdin:
        return _login_token(args)
    if not args.user:
        raise UsageError("give --user USER (MQTT) or --token-stdin (relays and ntfy servers)")
    if sys.stdin.isatty():
        password = getpass.getpass(f"Password for {args.user} at {args.server}: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UsageError("empty password; nothing stored")
    where = secrets.store_password(load_config(args), args.server, args.user, password)
    _said(f"stored the password for {args.user} at {secrets.server_key(args.server)}", where)
    return 0


def _said(what: str, where: Path | None) -> None:
    """One line: stored in the keyring, or (no usable keyring) in which 0600 file."""
    if where is None:
        print(what, file=sys.stderr)
    else:
        print(f"no OS keyring here: {what} in {where} (mode 0600)", file=sys.stderr)


def _login_token(args: argparse.Namespace) -> int:
    from agent.ntfy import server_kind

    server = args.server
    if server_kind(server) != "ntfy":
        raise UsageError(f"{server}: tokens are for http(s):// and ws(s):// servers")
    token = sys.stdin.readline().strip()
    if not token:
        raise UsageError("no token on stdin; nothing stored")
    where = secrets.store_token(load_config(args), server, token)
    _said(f"stored the access token for {secrets.token_key(server)}", where)
    return 0


def logout(args: argparse.Namespace) -> int:
    from agent.ntfy import server_kind

    cfg = load_config(args)
    if server_kind(args.server) == "ntfy" and secrets.delete_token(cfg, args.server):
        print(f"removed the token for {secrets.token_key(args.server)}", file=sys.stderr)
        return 0
    if not secrets.delete_password(cfg, args.server):
        print(f"no stored login for {secrets.server_key(args.server)}", file=sys.stderr)
        return 1
    print(f"removed the login for {secrets.server_key(args.server)}", file=sys.stderr)
    return 0
