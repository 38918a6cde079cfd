"""``pushagent login SERVER --user U`` and ``pushagent logout SERVER``: keyring credentials."""

from __future__ import annotations

import argparse
import getpass
import sys

from agent import secrets
from agent.commands import common
from agent.errors import UsageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "login",
        help="store a server password in the OS keyring",
        description="Store the password for SERVER in the OS keyring. The password is read "
        "from stdin when it is not a terminal, else prompted for (never a command-line flag).",
    )
    common(p)
    p.add_argument("server", metavar="SERVER", help="e.g. mqtts://broker.example.com")
    p.add_argument("--user", required=True, help="user name at the server")
    p.set_defaults(func=login)
    q = sub.add_parser(
        "logout", help="remove a stored password", description="Forget SERVER's password."
    )
    common(q)
    q.add_argument("server", metavar="SERVER")
    q.set_defaults(func=logout)


def login(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass(f"Password for {args.user} at {args.server}: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UsageError("empty password; nothing stored")
    secrets.store_password(args.server, args.user, password)
    print(
        f"stored the password for {args.user} at {secrets.server_key(args.server)}", file=sys.stderr
    )
    return 0


def logout(args: argparse.Namespace) -> int:
    if not secrets.delete_password(args.server):
        print(f"no stored login for {secrets.server_key(args.server)}", file=sys.stderr)
        return 1
    print(f"removed the login for {secrets.server_key(args.server)}", file=sys.stderr)
    return 0
