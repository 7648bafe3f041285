"""`lily backfill`: a bulk load of envelope files into a tenant's hub, resumable and
shardable, with its progress on stderr and a JSON summary on stdout. Without `--tenant`, a
multi-tenant source: each envelope to the tenant it names."""

from __future__ import annotations

import argparse
import sys

from lily_dagster.cli.common import CliError, Subparsers, load_settings, print_json, tenant_arg


def register(sub: Subparsers) -> None:
    backfill = sub.add_parser(
        "backfill", help="bulk load of envelope files into a tenant's hub (resumable)"
    )
    backfill.add_argument(
        "--tenant",
        type=tenant_arg,
        help="the tenant whose hub to load (events naming another are quarantined as "
        "tenant_mismatch); without it, each envelope goes to the tenant it names",
    )
    backfill.add_argument("--source", required=True, help="a file, a directory or s3://…")
    backfill.add_argument("--shards", type=int, default=1, help="how many shards in all")
    backfill.add_argument("--shard", type=int, default=0, help="which one this run loads")
    backfill.add_argument("--batch-rows", type=int, default=500_000)
    backfill.set_defaults(func=cmd_backfill)


def cmd_backfill(args: argparse.Namespace) -> int:
    if args.tenant is None:
        return cmd_routed_backfill(args)
    from lily_dagster.lib.backfill import BackfillReport, run_backfill
    from lily_dagster.lib.hub import open_hub
    from lily_dagster.lib.metrics import MetricsStore
    from lily_dagster.lib.quarantine import QuarantineStore

    settings = load_settings()
    interactive = sys.stderr.isatty()

    def progress(r: BackfillReport) -> None:
        # One status line, rewritten in place on a terminal; a log line per batch otherwise.
        line = (
            f"{args.tenant} shard {r.shard}/{r.shards}: batch {r.batches}, "
            f"{r.rows_read:,} rows read, {r.applied:,} applied, {r.quarantined:,} quarantined, "
            f"{r.rows_per_s:,.0f} rows/s"
        )
        print(f"\r{line}" if interactive else line, end="" if interactive else "\n",
              file=sys.stderr, flush=True)  # fmt: skip

    report = run_backfill(
        open_hub(settings),
        QuarantineStore.from_settings(settings),
        settings.config,
        args.tenant,
        args.source,
        shards=args.shards,
        shard=args.shard,
        batch_rows=args.batch_rows,
        max_event_bytes=settings.max_event_bytes,
        progress=progress,
        metrics=MetricsStore.from_settings(settings),
    )
    if interactive:
        print(file=sys.stderr)
    if report.shards_left:
        print(
            f"{args.tenant}: not whole yet, shards still to run: {report.shards_left} "
            f"(of --shards {report.shards})",
            file=sys.stderr,
        )
    print_json(report.as_dict())
    return 0


def cmd_routed_backfill(args: argparse.Namespace) -> int:
    """`lily backfill` of a multi-tenant source (no --tenant)."""
    from lily_dagster.lib.backfill_routed import RoutedReport, run_routed_backfill
    from lily_dagster.lib.hub import open_hub
    from lily_dagster.lib.metrics import MetricsStore
    from lily_dagster.lib.quarantine import QuarantineStore

    if args.shards != 1 or args.shard != 0:
        raise CliError("--shards and --shard need --tenant (a multi-tenant load is one pass)")
    settings = load_settings()

    def progress(r: RoutedReport) -> None:
        print(
            f"{len(r.tenants)} tenants: {r.rows_read:,} rows read, {r.unrouted:,} unrouted",
            file=sys.stderr,
            flush=True,
        )

    report = run_routed_backfill(
        open_hub(settings),
        QuarantineStore.from_settings(settings),
        settings.config,
        args.source,
        batch_rows=args.batch_rows,
        max_event_bytes=settings.max_event_bytes,
        progress=progress,
        metrics=MetricsStore.from_settings(settings),
    )
    print_json(report.as_dict())
    return 0
