"""Bulk backfill: assets/s and peak RSS at 1M and 10M assets to the embedded hub, from
Parquet or JSON Lines of the same envelopes (or both, side by side), with the naive path (one
pyatlan object per row) and a raw polars read (the floor) measured in the same run, and the
time a billion would take on one node and on N pods. Prints one JSON object (the same as
`lily bench backfill`).

    .venv/bin/python -m benchmarks.backfill [--assets 1000000 10000000] [--batch-rows N]
        [--encryption on|off|both] [--format parquet|jsonl|both]
"""

from __future__ import annotations

import argparse
import json

from lily_dagster.bench.backfill import run

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--assets", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--batch-rows", type=int, default=500_000)
    parser.add_argument(
        "--encryption",
        choices=["on", "off", "both"],
        default=None,
        help="LILY_ENCRYPTION for the loads (default: the environment's); both: compare",
    )
    parser.add_argument(
        "--format",
        choices=["parquet", "jsonl", "both"],
        default="parquet",
        help="the estate's source format; both: Parquet and JSON Lines side by side",
    )
    args = parser.parse_args()
    formats = ("parquet", "jsonl") if args.format == "both" else (args.format,)
    result = run(
        args.assets, batch_rows=args.batch_rows, encryption=args.encryption, formats=formats
    )
    print(json.dumps(result))
