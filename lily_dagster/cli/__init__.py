"""The `lily` console script (CONTRACT.md §2). Errors print one line and exit non-zero.

A module per command (or group of sub-commands): its `register(subparsers)` adds its
parsers, each with its `cmd_*` handler as `func`. A new command is a module and a line in
`COMMANDS`. Heavy imports (Dagster, pyatlan, the web servers) stay inside the handlers:
`lily --help` loads none of them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lily_dagster.cli import (
    audit,
    backfill,
    batches,
    bench,
    broker,
    demo,
    dev,
    dlq,
    emulator,
    gdpr,
    hub,
    keys,
    quarantine,
    run,
    tenant,
    tokens,
    trace,
    webhook,
)
from lily_dagster.cli.common import CliError, OneLineErrorParser, print_error
from lily_dagster.lib import processes
from lily_dagster.lib.broker import BrokerError
from lily_dagster.settings import ConfigError

__all__ = ["build_parser", "main"]

# In the order `lily --help` lists them.
COMMANDS = (
    demo,
    broker,
    run,
    hub,
    quarantine,
    batches,
    trace,
    backfill,
    bench,
    dlq,
    audit,
    gdpr,
    keys,
    tenant,
    webhook,
    emulator,
    tokens,
    dev,
)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="lily", description="Lily: metadata events into Atlan, on Dagster."
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineErrorParser)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # SIGTERM, SIGINT and SIGHUP stop every process the command started (each in a
        # process group of its own) and exit 128 + the signal; so does leaving by an error.
        with processes.handle_signals():
            return int(args.func(args))
    except processes.SignalExit as exc:
        print(f"lily: {exc}", file=sys.stderr)
        return exc.exit_code
    except (ConfigError, CliError, BrokerError, processes.ProcessError) as exc:
        print_error(str(exc))
        return 2
    except BrokenPipeError:
        return 0
