"""``pushagent``: parse, build config, run the command, map errors to one line and an exit code.

Each command lives in ``agent.commands.<name>`` and exposes ``register(subparsers)``, which
adds its parser and sets ``func`` to a handler ``(args) -> int``. Handlers build the
configuration with ``agent.commands.load_config(args, ...)`` and call into the library.
Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad configuration.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from agent import __version__, buildinfo, redact
from agent.errors import EdgepushError

# Order here is the order in --help.
COMMANDS = (
    "run",
    "send",
    "history",
    "status",
    "read",
    "stats",
    "ack",
    "pause",
    "login",
    "key",
    "config",
    "tray",
    "autostart",
)

log = logging.getLogger("pushagent")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with ``only``, just that command (see ``main``)."""
    parser = argparse.ArgumentParser(
        prog="pushagent",
        description="edgepush agent: receive push messages over MQTT or WebSocket, keep them "
        "in an offline cache, show them as notifications and send receipts back.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"pushagent {__version__}",
        help="show the "
        "version and exit (with --verbose: the Python and libraries it was built with)",
    )
    parser.add_argument("--config", metavar="FILE", help="config file (TOML)")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        if only is not None and name != only:
            continue
        try:
            module = importlib.import_module(f"agent.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"agent.commands.{name}":
                continue  # not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pushagent`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if (verbose := buildinfo.version_request(argv)) is not None:
        sys.stdout.write(buildinfo.describe("pushagent", verbose=verbose))
        return 0
    # Import only the command being run: `history` must not pay for the imports of `run`
    # (asyncio, paho, notifier backends). --help and errors without a command build them all.
    parser = build_parser(_command_in(argv))
    args = parse(parser, argv)
    # One-shot commands (send) set a quieter default: their output is the answer, not a log.
    quiet = getattr(args, "default_log_level", logging.INFO)
    level = logging.WARNING - 10 * min(args.verbose, 2) if args.verbose else quiet
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    redact.install()  # every handler, so third-party loggers too (agent.redact)
    try:
        return int(args.func(args))
    except EdgepushError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:  # config: one per error
            print(f"pushagent: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0  # `pushagent history | head`: the reader left, nothing went wrong


def parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """``parser.parse_args``, but an unknown argument is reported with its command's usage.

    argparse hands a subcommand's leftovers back to the top-level parser, whose usage
    (``pushagent [-h] ... COMMAND``) does not show the options the user was looking for.
    Also used by ``edge_relay.cli`` (``edge-relay token add ...``: the innermost command).
    """
    args, extra = parser.parse_known_args(argv)
    if extra:
        innermost(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def innermost(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub)command that ``args`` were parsed for."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                return innermost(chosen, args)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The command named in ``argv`` (skipping global options and their values), if any."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--config":
            skip = True
        elif not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None
