"""The Atlan bulk path: entities serialised per second by Lily's polars builder against
pyatlan object construction (`Table.creator` / `Column.creator` serialised by pyatlan's
own request encoder), in the same run; then entities/s end to end through AtlanHub to the
Atlan emulator over HTTP (pyatlan's client), with the client-side rate limit off and at
Atlan's documented 400 requests/min. Prints one JSON object.

    .venv/bin/python -m benchmarks.atlan_bulk [--entities 200000] [--naive 3000]
        [--http 20000] [--limited 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from lily_dagster.bench.backfill import offline_client, pyatlan_bulk_json
from lily_dagster.lib.broker import free_port
from lily_dagster.lib.hub.atlan import AtlanHub, AtlanOptions
from lily_dagster.lib.hub.atlan.entities import bulk_bodies, entity_json
from lily_dagster.lib.hub.base import RECORD_SCHEMA

CONN = "default/snowflake/1700000000"


def records(n: int, start: int = 0) -> pl.DataFrame:
    """A schema of tables with 9 columns each: 1 table and 9 columns in every 10 rows."""
    i = pl.int_range(start, start + n, eager=True).alias("i")
    table = pl.format(f"{CONN}/DB/SCH/T{{}}", pl.col("i") // 10)
    is_table = pl.col("i") % 10 == 0
    frame = pl.DataFrame(i).select(
        pl.when(is_table)
        .then(table)
        .otherwise(pl.format("{}/C{}", table, pl.col("i") % 10))
        .alias("qualified_name"),
        pl.lit("ACTIVE").alias("status"),
        pl.when(is_table).then(pl.lit("Table")).otherwise(pl.lit("Column")).alias("type_name"),
        pl.when(is_table)
        .then(pl.format("T{}", pl.col("i") // 10))
        .otherwise(pl.format("C{}", pl.col("i") % 10))
        .alias("name"),
        pl.format("asset {}", pl.col("i")).alias("description"),
        pl.lit(["jdoe"]).alias("owner_users"),
        pl.when(is_table)
        .then(pl.lit(f"{CONN}/DB/SCH"))
        .otherwise(table)
        .alias("parent_qualified_name"),
        pl.when(is_table)
        .then(pl.lit("{}"))
        .otherwise(
            pl.concat_str(
                pl.lit('{"data_type":"VARCHAR","order":'),
                (pl.col("i") % 10).cast(pl.String),
                pl.lit("}"),
            )
        )
        .alias("attributes"),
        pl.lit(["PII"]).alias("classifications"),
        pl.lit(1).cast(pl.Int64).alias("version"),
    )
    missing = [
        pl.lit(None, dtype=t).alias(c) for c, t in RECORD_SCHEMA.items() if c not in frame.columns
    ]
    return frame.with_columns(missing).select(list(RECORD_SCHEMA)).cast(RECORD_SCHEMA)


def parents() -> pl.DataFrame:
    """The database and schema the tables of `records` belong to."""
    frame = pl.DataFrame(
        {
            "qualified_name": [f"{CONN}/DB", f"{CONN}/DB/SCH"],
            "status": ["ACTIVE", "ACTIVE"],
            "type_name": ["Database", "Schema"],
            "name": ["DB", "SCH"],
            "parent_qualified_name": [None, f"{CONN}/DB"],
            "attributes": ["{}", "{}"],
            "version": [1, 1],
        }
    )
    missing = [
        pl.lit(None, dtype=t).alias(c) for c, t in RECORD_SCHEMA.items() if c not in frame.columns
    ]
    return frame.with_columns(missing).select(list(RECORD_SCHEMA)).cast(RECORD_SCHEMA)  # type: ignore[arg-type]


def lily_serialise(n: int) -> float:
    frame = records(n)
    types = pl.DataFrame({"qualified_name": [f"{CONN}/DB/SCH"], "type_name": ["Schema"]})
    guids = pl.Series([f"-{k}" for k in range(n)])
    started = time.perf_counter()
    built = entity_json(frame, guids, types, {"PII": "tagid"})
    bodies = bulk_bodies(built.get_column("entity").to_list(), 50)
    seconds = time.perf_counter() - started
    assert len(bodies) == -(-n // 50)
    return n / seconds


def pyatlan_serialise(n: int) -> float:
    from pyatlan.model.assets import Column, Table

    client = offline_client()
    frame = records(n)

    def objects() -> Iterator[Any]:
        for row in frame.iter_rows(named=True):
            asset: Any
            if row["type_name"] == "Table":
                asset = Table.creator(
                    name=row["name"], schema_qualified_name=row["parent_qualified_name"]
                )
            else:
                asset = Column.creator(
                    name=row["name"],
                    parent_qualified_name=row["parent_qualified_name"],
                    parent_type=Table,
                    order=int(json.loads(row["attributes"])["order"]),
                )
                asset.data_type = "VARCHAR"
            asset.description = row["description"]
            asset.owner_users = set(row["owner_users"])
            # No tags here: pyatlan would resolve them through a live tag cache. Lily's side
            # does map them, so the comparison flatters pyatlan.
            yield asset

    started = time.perf_counter()
    pyatlan_bulk_json(objects(), client)
    return n / (time.perf_counter() - started)


def to_emulator(
    base_url: str, api_key: str, n: int, rate_per_min: float | None
) -> dict[str, float]:
    """Entities/s from ledger merge to Atlan acknowledging, through AtlanHub."""

    httpx.post(f"{base_url}/_emulator/reset").raise_for_status()
    with tempfile.TemporaryDirectory() as tmp:
        hub = AtlanHub(
            AtlanOptions(base_url=base_url, api_key=api_key, rate_per_min=rate_per_min),
            Path(tmp) / "ledger",
        )
        events = events_of(pl.concat([parents(), records(n)]))
        started = time.perf_counter()
        result = hub.upsert("acme", events)
        seconds = time.perf_counter() - started
    if result.created < n:
        raise SystemExit(f"only {result.created} of {n} entities reached the emulator")
    return {
        "entities": n,
        "created": result.created,
        "seconds": round(seconds, 2),
        "entities_per_s": round(n / seconds),
        "requests": result.details.get("atlan_requests", 0),
        "requests_per_min": round(result.details.get("atlan_requests", 0) / seconds * 60),
    }


def events_of(frame: pl.DataFrame) -> pl.DataFrame:
    from lily_dagster.lib.envelope import EVENT_SCHEMA

    now = datetime(2026, 11, 24, tzinfo=UTC)
    out = frame.with_columns(
        pl.format("e{}", pl.int_range(pl.len())).alias("event_id"),
        pl.lit("acme").alias("tenant"),
        pl.lit("bench").alias("source"),
        pl.lit("upsert").alias("op"),
        pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("event_time"),
        pl.lit(None, dtype=pl.String).alias("patch"),
        pl.lit("{}").alias("raw"),
        pl.lit("bench").alias("origin"),
    )
    missing = [
        pl.lit(None, dtype=t).alias(c) for c, t in EVENT_SCHEMA.items() if c not in out.columns
    ]
    return out.with_columns(missing).select(list(EVENT_SCHEMA)).cast(EVENT_SCHEMA)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entities", type=int, default=200_000)
    parser.add_argument("--naive", type=int, default=3_000)
    parser.add_argument("--http", type=int, default=20_000)
    parser.add_argument("--limited", type=int, default=3_000)
    args = parser.parse_args()
    lily_rate = lily_serialise(args.entities)
    naive_rate = pyatlan_serialise(args.naive)
    out: dict[str, object] = {
        "benchmark": "atlan_bulk",
        "serialise": {
            "lily_entities_per_s": round(lily_rate),
            "pyatlan_entities_per_s": round(naive_rate),
            "speedup": round(lily_rate / naive_rate, 1),
            "lily_entities": args.entities,
            "pyatlan_entities": args.naive,
        },
    }
    port, key = free_port(), "bench-key"
    lily = Path(sys.executable).with_name("lily")
    server = subprocess.Popen(
        [str(lily), "atlan-emulator", "--port", str(port), "--api-key", key],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base_url}/_emulator/stats").raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise SystemExit("the Atlan emulator did not start within 30 s") from None
                time.sleep(0.2)
        out["to_emulator_rate_limit_off"] = to_emulator(base_url, key, args.http, None)
        out["to_emulator_rate_limit_400_per_min"] = to_emulator(base_url, key, args.limited, 400)
    finally:
        server.terminate()
        server.wait(10)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
