"""``edge-relay``: parse, build config, run the server, map errors to one line and an exit code."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent import buildinfo, redact
from agent.cli import parse
from agent.errors import EdgepushError
from edge_relay import __version__, auth, config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-relay",
        description="edgepush edge relay: a self-hosted, ntfy-compatible push hub for the LAN, "
        "optionally bridged to an upstream MQTT broker.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"edge-relay {__version__}",
        help="show the "
        "version and exit (with --verbose: the Python and libraries it was built with)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _serve_parser(sub)
    _token_parser(sub)
    _stats_parser(sub)
    return parser


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the relay")
    p.add_argument("--listen", metavar="HOST:PORT", help="default 0.0.0.0:8080")
    p.add_argument("--data-dir", type=Path, metavar="DIR", help="where the store lives")
    p.add_argument("--upstream", metavar="URL", help="upstream MQTT broker (mqtt://host:port)")
    p.add_argument("--upstream-topic", action="append", metavar="T", dest="upstream_topics",
                   help="MQTT filter to take from upstream (repeatable)")  # fmt: skip
    p.add_argument("--mqtt-protocol", choices=("auto", "5", "3.1.1"), dest="upstream_protocol",
                   help="upstream MQTT protocol: auto (5, else 3.1.1), 5 or 3.1.1")  # fmt: skip
    p.add_argument("--forward", action="append", metavar="PATTERN",
                   help="local topics (glob with *) to forward upstream (repeatable)")  # fmt: skip
    p.add_argument("--auth-file", type=Path, metavar="FILE", help="tokens (edge-relay token ...)")
    p.add_argument("--tls-cert", type=Path, metavar="FILE")
    p.add_argument("--tls-key", type=Path, metavar="FILE")
    p.add_argument("--no-advertise", action="store_true", help="no mDNS advertisement")
    p.add_argument("--no-web", action="store_true", help="no web app at / ([web] enabled)")
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML config file")
    p.set_defaults(func=_serve)


def _token_parser(sub: Any) -> None:
    p = sub.add_parser("token", help="manage access tokens in an auth file")
    p.add_argument("--auth-file", type=Path, metavar="FILE", help="default ./auth.json")
    tsub = p.add_subparsers(dest="token_command", metavar="ACTION")
    tsub.required = True
    add = tsub.add_parser("add", help="create a token (printed once; only its hash is stored)")
    add.add_argument("name")
    add.add_argument("--read", nargs="*", default=[], metavar="PATTERN")
    add.add_argument("--write", nargs="*", default=[], metavar="PATTERN")
    add.add_argument(
        "--admin",
        action="store_true",
        help="may manage tokens and see the dashboard (/v1/tokens, /v1/admin/overview)",
    )
    add.set_defaults(func=_token_add)
    tsub.add_parser("list", help="list tokens and their patterns").set_defaults(func=_token_list)
    rev = tsub.add_parser("revoke", help="delete a token")
    rev.add_argument("name")
    rev.set_defaults(func=_token_revoke)
    anon = tsub.add_parser("anonymous", help="what requests without a token may do")
    anon.add_argument("--read", nargs="*", default=[], metavar="PATTERN")
    anon.add_argument("--write", nargs="*", default=[], metavar="PATTERN")
    anon.set_defaults(func=_token_anonymous)
    for action in (add, rev, anon, tsub.choices["list"]):
        # accepted after the action too: `edge-relay token add NAME --auth-file F`
        action.add_argument("--auth-file", type=Path, metavar="FILE", dest="auth_file_here")


def _stats_parser(sub: Any) -> None:
    p = sub.add_parser(
        "stats",
        help="delivery analytics per topic and day, from the store",
        description="Per topic and UTC day: messages published, devices delivered to, "
        "displayed, clicked, dismissed, acknowledged, the click-through rate (clicked / "
        "displayed) and the median time from publish to click. Reads the relay's store "
        "(the relay may be running).",
    )
    p.add_argument("--topic", action="append", metavar="T", help="only this topic (repeatable)")
    p.add_argument(
        "--since",
        default="7d",
        metavar="WHEN",
        help="a duration back from now (7d, 12h), a unix time, or 'all'; default 7d",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--data-dir", type=Path, metavar="DIR", help="where the store lives")
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML config file")
    p.set_defaults(func=_stats)


def _stats(args: argparse.Namespace) -> int:
    import time

    from agent.envelope import dumps
    from agent.errors import UsageError
    from agent.store import Store
    from edge_relay import stats
    from edge_relay.core import check_relay_topic

    flags = {"data_dir": str(args.data_dir)} if args.data_dir else {}
    cfg = config.load(flags, config_file=args.config)
    now = int(time.time())
    try:
        since = stats.parse_window(args.since, now)
        topics = [check_relay_topic(t) for t in args.topic] if args.topic else None
    except (ValueError, EdgepushError) as exc:
        raise UsageError(f"{exc}") from None
    if not cfg.db.exists():
        raise UsageError(f"no relay store at {cfg.db} (use --data-dir or --config)")
    with Store(cfg.db) as store:
        data = stats.report(store, since=since, until=now + 1, topics=topics,
                            readable=lambda _: True)  # fmt: skip
    sys.stdout.write(dumps(data) + "\n" if args.json else stats.render(data))
    return 0


def _auth_file(args: argparse.Namespace) -> Path:
    return Path(args.auth_file_here or args.auth_file or "auth.json")


def _serve(args: argparse.Namespace) -> int:
    from edge_relay.service import serve  # aiohttp is imported only to serve

    flags = {
        "listen": args.listen,
        "data_dir": str(args.data_dir) if args.data_dir else None,
        "upstream": args.upstream,
        "upstream_topics": args.upstream_topics,
        "upstream_protocol": args.upstream_protocol,
        "forward": args.forward,
        "auth_file": str(args.auth_file) if args.auth_file else None,
        "tls_cert": str(args.tls_cert) if args.tls_cert else None,
        "tls_key": str(args.tls_key) if args.tls_key else None,
        "advertise": False if args.no_advertise else None,
        "web": {"enabled": False} if args.no_web else None,
    }
    cfg = config.load({k: v for k, v in flags.items() if v is not None}, config_file=args.config)
    return asyncio.run(serve(cfg))


def _token_add(args: argparse.Namespace) -> int:
    token = auth.add_token(_auth_file(args), args.name, args.read, args.write, admin=args.admin)
    print(token)
    print(
        f"token {args.name!r} added to {_auth_file(args)}; it is shown only once", file=sys.stderr
    )
    return 0


def _token_list(args: argparse.Namespace) -> int:
    db = auth.load(_auth_file(args))
    print(f"anonymous  read={','.join(db.anonymous.read) or '-'} "
          f"write={','.join(db.anonymous.write) or '-'}")  # fmt: skip
    for name, entry in sorted(db.tokens.items()):
        admin = "  admin" if entry.get("admin") is True else ""
        print(
            f"{name}  read={','.join(entry['read']) or '-'} "
            f"write={','.join(entry['write']) or '-'}{admin}"
        )
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    auth.revoke_token(_auth_file(args), args.name)
    print(f"token {args.name!r} revoked", file=sys.stderr)
    return 0


def _token_anonymous(args: argparse.Namespace) -> int:
    auth.set_anonymous(_auth_file(args), args.read, args.write)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edge-relay`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if (verbose := buildinfo.version_request(argv)) is not None:
        sys.stdout.write(buildinfo.describe("edge-relay", verbose=verbose))
        return 0
    parser = build_parser()
    args = parse(parser, argv)  # an unknown option: the usage of the command it was given to
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    redact.install()  # every handler, so third-party loggers too (agent.redact)
    try:
        return int(args.func(args))
    except EdgepushError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:  # config: one per error
            print(f"edge-relay: {line}", file=sys.stderr)
        return exc.exit_code
    except ExceptionGroup as group:
        error = only_error(group)
        print(f"edge-relay: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130


def only_error(group: ExceptionGroup[Exception]) -> EdgepushError:
    """The one EdgepushError a TaskGroup wrapped (``--listen`` on a busy port fails inside the
    service's TaskGroup); anything else in the group is a bug and is re-raised whole."""
    errors: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            errors.append(exc)
    if len(errors) == 1 and isinstance(errors[0], EdgepushError):
        return errors[0]
    raise group
