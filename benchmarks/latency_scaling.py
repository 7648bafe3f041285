"""Streaming latency as tenants grow: `lily bench latency` over a grid of tenant counts, rates
and Dagster storages, one configuration after another on this machine. Prints one JSON object:
per configuration p50/p95/max, events lost, runs, their queue wait, tenants and Dagster events
per run.

    .venv/bin/python -m benchmarks.latency_scaling [--tenants 3 30 100 300]
        [--rates 1000 10000] [--storage sqlite postgres] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lily_dagster.bench.latency import run_latency


def row(result: dict[str, Any]) -> dict[str, Any]:
    """What the README's scaling table shows of one configuration."""
    runs = result["runs"]
    return {
        "storage": result["storage"],
        "tenants": result["tenants"],
        "rate": result["rate"],
        "latency_s": result["latency_s"],
        "lost": result["lost"],
        "runs": runs["count"],
        "runs_failed": runs["by_status"].get("failure", 0),
        "queued_to_started_s": runs["queued_to_started_s"],
        "started_to_ended_s": runs["started_to_ended_s"],
        "tenants_per_run": runs["tenants_per_run"],
        "dagster_events_per_run": runs["dagster_events_per_run"],
        "load_avg_1m_at_start": result["settings"]["load_avg_1m_at_start"],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tenants", type=int, nargs="+", default=[3, 30, 100, 300])
    parser.add_argument("--rates", type=float, nargs="+", default=[1000.0, 10000.0])
    parser.add_argument(
        "--storage", nargs="+", choices=("sqlite", "postgres"), default=["sqlite", "postgres"]
    )
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    rows = []
    for storage in args.storage:
        for rate in args.rates:
            for tenants in args.tenants:
                result = run_latency(rate, args.seconds, tenants, storage=storage)
                rows.append(row(result))
                print(json.dumps(rows[-1]), file=sys.stderr)  # progress: one line each
    print(json.dumps({"benchmark": "latency-scaling", "seconds": args.seconds, "rows": rows}))
