"""`lily atlan-emulator`: an Atlan-compatible local server for pyatlan (tests, demos)."""

from __future__ import annotations

import argparse
import sys

from lily_dagster.cli.common import CliError, Subparsers, port_arg, serve


def register(sub: Subparsers) -> None:
    emulator = sub.add_parser(
        "atlan-emulator", help="an Atlan-compatible local server for pyatlan (tests, demos)"
    )
    emulator.add_argument("--port", type=port_arg, required=True)
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument(
        "--api-key",
        help="the bearer token it accepts (default: $LILY_ATLAN_EMULATOR_API_KEY, "
        "else lily-emulator-key)",
    )
    emulator.add_argument("--state", help="DuckDB file to keep state in (default: in memory)")
    emulator.add_argument(
        "--rate-limit-per-min", type=int, help="answer 429 above this many requests a minute"
    )
    emulator.set_defaults(func=cmd_atlan_emulator)


def cmd_atlan_emulator(args: argparse.Namespace) -> int:
    # The emulator is a distribution of its own (tools/atlan-emulator), not part of Lily's.
    try:
        from atlan_emulator.cli import EmulatorError, create
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "atlan_emulator":
            raise
        print(
            "lily atlan-emulator needs the lily-atlan-emulator package: "
            "pip install -e tools/atlan-emulator",
            file=sys.stderr,
        )
        return 2
    try:
        app, banner = create(
            args.api_key, args.state, args.rate_limit_per_min, args.host, args.port
        )
    except EmulatorError as exc:
        raise CliError(str(exc)) from None
    return serve(app, args.host, args.port, grace_s=5, banner=banner)
