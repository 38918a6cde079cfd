"""``edge-relay``: parse, build config, run the server, map errors to one line and an exit code."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from agent import buildinfo
from agent.errors import EdgepushError
from edge_relay import __version__


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edge-relay`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if (verbose := buildinfo.version_request(argv)) is not None:
        sys.stdout.write(buildinfo.describe("edge-relay", verbose=verbose))
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except EdgepushError as exc:
        print(f"edge-relay: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
