"""The full built-in pre-ingest hook chain on 1M and 10M events, in bounded batches.

Synthetic events are generated batch by batch in polars, so memory depends on the batch
size, not on the total: 70% columns (8 names, 4 of them personal data), 20% tables, 10%
processes whose outputs are missing (lineage references); every description carries an
e-mail and a phone number, one distinct description per table (1 row in 10); owner lists
repeat as they do in real estates. Prints one JSON object: events/s per total and the peak
RSS after each, which stays flat when memory is bounded by the batch.

    .venv/bin/python -m benchmarks.hooks_chain [--totals 1000000 10000000] [--batch 500000]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from datetime import UTC, datetime

import polars as pl

from lily_dagster.lib.envelope import EVENT_SCHEMA
from lily_dagster.lib.hooks import HookContext, build_chain, run_chain
from lily_dagster.settings import HookRef

CHAIN = [
    HookRef(name="owner-normalise"),
    HookRef(name="ownership-map", settings={"users": {"u1": "jdoe", "u2": "asmith"}}),
    HookRef(name="pii-classify"),
    HookRef(name="pii-mask"),
    HookRef(
        name="glossary-tags",
        settings={
            "rules": [
                {
                    "qualified_name": "/FINANCE/",
                    "add_classifications": ["Finance"],
                    "add_terms": ["Revenue"],
                }
            ]
        },
    ),
    HookRef(name="lineage-check"),
]
COLUMN_NAMES = [
    "EMAIL",
    "PHONE_NUMBER",
    "FIRST_NAME",
    "AMOUNT",
    "CREATED_AT",
    "IP_ADDRESS",
    "STATUS",
    "SKU",
]


def synthetic_batch(start: int, size: int) -> pl.DataFrame:
    i = pl.int_range(start, start + size, eager=True).alias("i")
    frame = pl.DataFrame(i)
    kind = pl.col("i") % 10
    table = pl.format(
        "default/snowflake/1700000000/DB/{}/T{}",
        pl.when(pl.col("i") % 7 == 0).then(pl.lit("FINANCE")).otherwise(pl.lit("SALES")),
        pl.col("i") // 10,
    )
    col_name = pl.lit(COLUMN_NAMES).list.get(pl.col("i") % len(COLUMN_NAMES))
    is_column, is_process = kind < 7, kind == 9
    return frame.select(
        pl.format("e{}", pl.col("i")).alias("event_id"),
        pl.lit("acme").alias("tenant"),
        pl.lit("bench").alias("source"),
        pl.lit("upsert").alias("op"),
        pl.lit(datetime(2026, 11, 23, tzinfo=UTC))
        .cast(pl.Datetime("us", "UTC"))
        .alias("event_time"),
        pl.when(is_column)
        .then(pl.lit("Column"))
        .when(is_process)
        .then(pl.lit("Process"))
        .otherwise(pl.lit("Table"))
        .alias("type_name"),
        pl.when(is_column)
        .then(pl.format("{}/{}", table, col_name))
        .when(is_process)
        .then(pl.format("default/snowflake/1700000000/process/p{}", pl.col("i")))
        .otherwise(table)
        .alias("qualified_name"),
        pl.when(is_column)
        .then(col_name)
        .otherwise(pl.format("T{}", pl.col("i") // 10))
        .alias("name"),
        # One description per table (1 in 10 rows distinct), each with an e-mail and a phone.
        pl.format(
            "table {} owned by user{}@example.com, call +44 20 7946 0{}",
            pl.col("i") // 10,
            (pl.col("i") // 10) % 100,
            (pl.col("i") // 10) % 1000,
        ).alias("description"),
        pl.concat_list([pl.lit("U1"), pl.format("u{}", pl.col("i") % 3)]).alias("owner_users"),
        pl.lit(["Data-Eng"], dtype=pl.List(pl.String)).alias("owner_groups"),
        pl.lit(None, dtype=pl.String).alias("certificate_status"),
        pl.when(is_column).then(table).otherwise(None).alias("parent_qualified_name"),
        pl.lit(None, dtype=pl.List(pl.String)).alias("glossary_terms"),
        # Attributes differ per row, as in real estates (no constant column to shortcut).
        pl.concat_str(
            pl.lit('{"data_type":"VARCHAR","order":'),
            (pl.col("i") % 50).cast(pl.String),
            pl.lit("}"),
        ).alias("attributes"),
        pl.lit([], dtype=pl.List(pl.String)).alias("classifications"),
        pl.when(is_process)
        .then(pl.concat_list([table]))
        .otherwise(pl.lit([], dtype=pl.List(pl.String)))
        .alias("inputs"),
        pl.when(is_process)
        .then(pl.concat_list([pl.format("{}_OUT", table)]))
        .otherwise(pl.lit([], dtype=pl.List(pl.String)))
        .alias("outputs"),
        pl.lit(None, dtype=pl.String).alias("patch"),
        pl.lit("{}").alias("raw"),
        pl.format("bench:{}", pl.col("i")).alias("origin"),
    ).cast(EVENT_SCHEMA)  # type: ignore[arg-type]


def peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--totals", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--batch", type=int, default=500_000)
    args = parser.parse_args()
    chain = build_chain(CHAIN, "pre_ingest")
    ctx = HookContext(tenant="acme", hub_lookup=lambda names: set())
    out: dict[str, object] = {
        "benchmark": "hooks_chain",
        "hooks": [h.name for h in chain],
        "batch": args.batch,
    }
    for total in args.totals:
        hook_seconds = 0.0
        rows_out = rejects = pii_tagged = 0
        for start in range(0, total, args.batch):
            batch = synthetic_batch(start, min(args.batch, total - start))
            started = time.perf_counter()
            result = run_chain(batch, chain, ctx)
            hook_seconds += time.perf_counter() - started
            rows_out += result.events.height
            rejects += result.rejects.height
            pii_tagged += result.events.filter(
                pl.col("classifications").list.contains("PII")
            ).height
        out[f"events_{total}"] = {
            "events_per_s": round(total / hook_seconds),
            "hook_seconds": round(hook_seconds, 2),
            "rows_out": rows_out,
            "rejects": rejects,
            "pii_tagged": pii_tagged,
            "peak_rss_mib_so_far": peak_rss_mib(),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
