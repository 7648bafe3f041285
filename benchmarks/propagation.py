"""Outbound propagation: changes dispatched per second per target type, and the delay from
hub upsert to delivery (p50/p95), with local receivers (HTTP on loopback for webhook,
Slack and Teams; a DuckDB database for Snowflake statements; a copy of the sample dbt
project for dbt). Prints one JSON object.

    .venv/bin/python -m benchmarks.propagation [--changes 20000] [--batch 100] [--rounds 20]

From the repository root, as a module: the receivers are the test suite's
(`lily_dagster_tests.support.receivers`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

from lily_dagster.lib.envelope import decode_envelopes
from lily_dagster.lib.hub.local import LocalHub
from lily_dagster.lib.propagation import Propagator, configure_targets
from lily_dagster.settings import LilyConfigFile
from lily_dagster_tests.support.envelopes import envelope
from lily_dagster_tests.support.receivers import RecordingReceiver

SAMPLE_DBT = Path(__file__).resolve().parent.parent / "lily_dagster_tests/fixtures/dbt_project"
CONN = "default/snowflake/1700000000/DB/SCH"


def events(n: int, tenant: str = "acme", round_: int = 0) -> pl.DataFrame:
    """n records: tables with 9 columns each, one change apiece (round_ > 0: updates)."""
    payloads = []
    for i in range(n):
        table = f"{CONN}/T{i // 10}"
        qn = table if i % 10 == 0 else f"{table}/C{i % 10}"
        attributes: dict[str, Any] = {
            "description": f"asset {i} r{round_}",
            "owner_users": ["jdoe"],
        }
        if i % 10:
            attributes["parent_qualified_name"] = table
        event = envelope(
            qn,
            event_id=f"e{i}-{round_}",
            tenant=tenant,
            source="bench",
            event_time=f"2026-11-24T10:{round_ % 60:02d}:00Z",
            type_name="Table" if i % 10 == 0 else "Column",
            attributes=attributes,
        )
        payloads.append(json.dumps(event))
    return decode_envelopes(
        payloads, [f"b:{i}" for i in range(n)], tenant=tenant, max_event_bytes=1 << 20
    ).events


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3) if ordered else 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--changes", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    out: dict[str, Any] = {"benchmark": "propagation", "changes": args.changes, "batch": args.batch}
    os.environ["BENCH_HOOK_SECRET"] = "bench-secret"
    with tempfile.TemporaryDirectory() as tmp, RecordingReceiver() as receiver:
        root = Path(tmp)
        dbt = root / "dbt"
        shutil.copytree(SAMPLE_DBT, dbt)
        # Named after the Snowflake database the qualified names give (DB).
        sf_db = str(root / "DB.duckdb")
        _prepare_snowflake(Path(sf_db), args.changes)
        targets: list[dict[str, Any]] = [
            {"name": "webhook", "type": "webhook", "url": receiver.url},
            {"name": "slack", "type": "slack", "url": receiver.url},
            {"name": "teams", "type": "teams", "url": receiver.url},
            {"name": "snowflake", "type": "snowflake", "connection": "duckdb", "database": sf_db},
            {"name": "dbt", "type": "dbt", "project_dir": str(dbt)},
        ]
        targets[0]["secret_env"] = "BENCH_HOOK_SECRET"
        targets[3]["tags"] = False  # DuckDB has no tags
        for t in targets:
            t["batch_size"] = args.batch
        tenants = [{"name": "acme"}, *({"name": f"lat-{t['name']}"} for t in targets)]
        config = LilyConfigFile.model_validate(
            {"tenants": tenants, "targets": targets, "hooks": {"post_consume": []}}
        )
        hub = LocalHub(root / "hub")
        started = time.perf_counter()
        hub.upsert("acme", events(args.changes))
        out["hub_upsert_s"] = round(time.perf_counter() - started, 2)
        propagator = Propagator(hub, root / "positions", root / "dlq")
        # Throughput: each target drains a backlog of `changes`.
        for target in configure_targets(config, "acme"):
            started = time.perf_counter()
            result = propagator.dispatch("acme", target, max_batches=10**6)
            seconds = time.perf_counter() - started
            out[target.name] = {
                "delivered": result.delivered,
                "dead_lettered": result.dead_lettered,
                "seconds": round(seconds, 2),
                "changes_per_s": round(result.delivered / seconds) if seconds else 0,
            }
        # Delay: rounds of `batch` changes, each upserted then propagated at once (its own
        # tenant per target, so targets do not wait for each other).
        for target in configure_targets(config, "acme"):
            tenant = f"lat-{target.name}"
            delays: list[float] = []
            for round_ in range(args.rounds):
                hub.upsert(tenant, events(args.batch, tenant, round_))
                delays += propagator.dispatch(tenant, target).delays_s
            out[target.name] |= {
                "delay_p50_s": percentile(delays, 0.5),
                "delay_p95_s": percentile(delays, 0.95),
                "delay_rounds": args.rounds,
            }
    print(json.dumps(out))


def _prepare_snowflake(path: Path, n: int) -> None:
    """The tables and columns the COMMENT statements name, in a DuckDB database named DB."""
    import duckdb

    con = duckdb.connect(str(path))
    con.execute('CREATE SCHEMA IF NOT EXISTS "SCH"')
    for t in range(-(-n // 10)):
        cols = ", ".join(f'"C{c}" VARCHAR' for c in range(1, 10))
        con.execute(f'CREATE TABLE IF NOT EXISTS "SCH"."T{t}" ({cols})')
    con.close()


if __name__ == "__main__":
    main()
