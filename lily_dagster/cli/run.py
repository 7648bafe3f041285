"""`lily run --until-idle`: the Dagster daemon until sources are drained and no run is in
flight, then a summary of the runs."""

from __future__ import annotations

import argparse

from lily_dagster.cli.common import CliError, Subparsers, load_settings, print_json


def register(sub: Subparsers) -> None:
    run = sub.add_parser("run", help="run the Dagster daemon")
    run.add_argument(
        "--until-idle",
        action="store_true",
        help="exit once sources are drained and no run is in flight",
    )
    run.add_argument(
        "--timeout", type=float, default=1800, help="seconds before giving up (default 1800)"
    )
    run.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from lily_dagster.runtime import NotIdleError, run_until_idle

    settings = load_settings()
    if not args.until_idle:
        raise CliError(
            "only `lily run --until-idle` is supported; use `make run` for a long-running stack"
        )
    try:
        summary = run_until_idle(settings, timeout_s=args.timeout)
    except NotIdleError as exc:
        raise CliError(str(exc)) from None
    print_json(summary, pretty=True)
    if summary.get("kafka_offset_resets"):  # Kafka events were lost (README: How events flow)
        return 3
    return 1 if summary["runs"].get("failure") else 0
