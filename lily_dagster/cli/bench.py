"""`lily bench`: benchmarks (`backfill`, `latency`); each prints one JSON object."""

from __future__ import annotations

import argparse
import os

from lily_dagster.bench.scratch_pg import DEFAULT_ADMIN_URL
from lily_dagster.cli.common import CliError, Subparsers, command_group, print_json


def register(sub: Subparsers) -> None:
    bench = command_group(
        sub, "bench", "benchmarks; each prints one JSON object", dest="bench_command"
    )
    bench_backfill = bench.add_parser(
        "backfill", help="a synthetic estate through the backfill path, with its baselines"
    )
    bench_backfill.add_argument(
        "--assets", type=int, nargs="+", required=True, help="one estate size or several"
    )
    bench_backfill.add_argument("--batch-rows", type=int, default=500_000)
    _switch(bench_backfill, "encryption", "the loads", "off and on side by side")
    _switch(
        bench_backfill, "metrics", "the loads",
        "each estate loaded with metrics off and on, alternating, and nothing else",
    )  # fmt: skip
    bench_backfill.add_argument(
        "--format",
        choices=("parquet", "jsonl", "both"),
        default="parquet",
        help="the estate's source format; both: Parquet and the same envelopes as JSON Lines, "
        "loaded side by side",
    )
    bench_backfill.set_defaults(func=cmd_bench_backfill)
    bench_latency = bench.add_parser(
        "latency", help="produce-to-hub latency under the daemon at a fixed rate"
    )
    bench_latency.add_argument("--rate", type=float, required=True, help="events per second")
    bench_latency.add_argument("--seconds", type=float, required=True)
    bench_latency.add_argument("--tenants", type=int, default=3)
    for switch in ("encryption", "metrics"):
        _switch(bench_latency, switch, "the stack", "off and on side by side")
    bench_latency.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="with --encryption both or --metrics both: run the pair this often, alternating "
        "its order; the p95s compared are the medians",
    )
    bench_latency.add_argument(
        "--storage",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="Dagster's storage: SQLite under the benchmark's LILY_HOME, or a scratch "
        "PostgreSQL database (created on --pg-admin-url's server, dropped afterwards)",
    )
    bench_latency.add_argument("--pg-admin-url", default=DEFAULT_ADMIN_URL)
    bench_latency.set_defaults(func=cmd_bench_latency)


def _switch(parser: argparse.ArgumentParser, name: str, where: str, both: str) -> None:
    """`--<name> on|off|both`: LILY_<NAME> for `where`; both: `both`."""
    parser.add_argument(
        f"--{name}",
        choices=("on", "off", "both"),
        help=f"LILY_{name.upper()} for {where}; both: {both} (default: as set)",
    )


def cmd_bench_backfill(args: argparse.Namespace) -> int:
    from lily_dagster.bench.backfill import run as run_bench

    if min(args.assets) < 1:
        raise CliError("--assets must be at least 1")
    if args.metrics == "both":
        from lily_dagster.bench.backfill import run_metrics

        print_json(run_metrics(args.assets, batch_rows=args.batch_rows))
        return 0
    if args.metrics is not None:
        os.environ["LILY_METRICS"] = args.metrics  # for the loads' child processes
    formats = ("parquet", "jsonl") if args.format == "both" else (args.format,)
    print_json(
        run_bench(
            args.assets, batch_rows=args.batch_rows, encryption=args.encryption, formats=formats
        )
    )
    return 0


def cmd_bench_latency(args: argparse.Namespace) -> int:
    from lily_dagster.bench.latency import compare_latency, run_latency

    if args.rate <= 0 or args.seconds <= 0:
        raise CliError("--rate and --seconds must be positive")
    storage = {"storage": args.storage, "pg_admin_url": args.pg_admin_url}
    if args.encryption == "both" and args.metrics == "both":
        raise CliError("--encryption both and --metrics both: compare one at a time")
    compared = [s for s in ("encryption", "metrics") if getattr(args, s) == "both"]
    if compared:
        print_json(
            compare_latency(
                args.rate, args.seconds, args.tenants, compared[0], args.rounds, **storage
            )
        )
        return 0
    fixed = {"encryption": args.encryption, "metrics": args.metrics}
    print_json(run_latency(args.rate, args.seconds, args.tenants, **fixed, **storage))
    return 0
