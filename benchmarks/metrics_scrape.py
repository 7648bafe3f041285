"""`python -m benchmarks.metrics_scrape [--tenants 100]`: the cost of one scrape of the
pipeline metrics (CONTRACT.md §8) with every series of N tenants recorded (4 stages, 5
quarantine reasons, 2 hub statuses, the latency histogram, 2 targets), and the cost of
recording one applied batch. Prints one JSON object."""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from lily_dagster.lib.metrics import MetricsStore, PipelineCollector
from lily_dagster.lib.metrics.updates import applied, propagation, quarantined, stages

REASONS = ("invalid_op", "missing_field", "tenant_mismatch", "bad_json", "too_large")


def populate(store: MetricsStore, tenants: int) -> None:
    import numpy as np
    import polars as pl

    for t in range(tenants):
        tenant = f"tenant-{t:03d}"
        store.record(stages(tenant, landed=1000, valid=990), key=f"{tenant}-read")
        rejects = pl.DataFrame({"reason": [REASONS[i % 5] for i in range(10)]})
        store.record(quarantined(tenant, rejects), key=f"{tenant}-q")
        delays = np.linspace(1, 60, 990)
        store.record(applied(tenant, 990, {"ACTIVE": 900, "DELETED": 90}, delays), key=tenant)
        for target in ("slack", "webhook"):
            store.record(propagation(tenant, target, 3, 1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=100)
    args = parser.parse_args()
    store = MetricsStore.in_home(Path(tempfile.mkdtemp()))
    populate(store, args.tenants)
    registry = CollectorRegistry()
    registry.register(PipelineCollector(store))
    scrapes = []
    for _ in range(20):
        started = time.perf_counter()
        body = generate_latest(registry)
        scrapes.append(time.perf_counter() - started)
    records = []
    for i in range(50):
        started = time.perf_counter()
        store.record(applied("tenant-000", 10, {"ACTIVE": 910}), key=f"extra-{i}")
        records.append(time.perf_counter() - started)
    print(json.dumps({
        "benchmark": "metrics_scrape",
        "tenants": args.tenants,
        "series": body.count(b"\nlily_"),
        "body_kib": round(len(body) / 1024, 1),
        "scrape_ms": {"p50": round(statistics.median(scrapes) * 1e3, 1),
                      "max": round(max(scrapes) * 1e3, 1)},
        "record_batch_ms": {"p50": round(statistics.median(records) * 1e3, 2),
                            "max": round(max(records) * 1e3, 2)},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
