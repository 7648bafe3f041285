"""`lily bench backfill --assets N`: a synthetic estate of N assets written to Parquet,
then loaded by the backfill path (decode, gates, the default pre-ingest hooks, LocalHub)
into a fresh hub, with the baselines measured in the same run: a raw polars scan of the same
files (the floor) and the naive path (one pyatlan asset object per row, on a sample)."""

from __future__ import annotations

import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

from lily_dagster.lib.backfill import run_backfill
from lily_dagster.lib.estate import write_estate
from lily_dagster.lib.hub.local import LocalHub
from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster.settings import LilyConfigFile

BILLION = 1_000_000_000


def _peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def floor_scan(files: list[Path]) -> float:
    """Rows/s of a raw polars read of every file (all columns, nothing done with them)."""
    started = time.perf_counter()
    rows = 0
    for f in files:
        rows += pl.read_parquet(f).height
    return rows / (time.perf_counter() - started)


def naive_rate(files: list[Path], sample: int) -> float:
    """Rows/s building one pyatlan asset object per row and serialising it as the SDK
    would send it (on `sample` rows of the estate)."""
    from pyatlan.client.atlan import AtlanClient
    from pyatlan.model.assets import Column, Table
    from pyatlan.model.core import AtlanRequest, BulkRequest

    client = AtlanClient(base_url="http://127.0.0.1:9", api_key="unused")
    rows = pl.read_parquet(files[0]).head(sample).get_column("asset").to_list()
    started = time.perf_counter()
    batch: list[Any] = []
    for asset in rows:
        parent = (
            asset["attributes"].get("parent_qualified_name")
            if isinstance(asset["attributes"], dict)
            else json.loads(asset["attributes"] or "{}").get("parent_qualified_name")
        )
        obj: Any
        if asset["type_name"] == "Column" and parent:
            obj = Column.creator(name=asset["name"], parent_qualified_name=parent,
                                 parent_type=Table, order=1)  # fmt: skip
        elif asset["type_name"] == "Table" and parent:
            obj = Table.creator(name=asset["name"], schema_qualified_name=parent)
        else:
            continue
        batch.append(obj)
        if len(batch) == 50:
            AtlanRequest(instance=BulkRequest(entities=batch), client=client).json()
            batch = []
    if batch:
        AtlanRequest(instance=BulkRequest(entities=batch), client=client).json()
    built = sum(1 for a in rows if a["type_name"] in ("Table", "Column"))
    return built / (time.perf_counter() - started)


def run(assets: int, batch_rows: int = 500_000, naive_sample: int = 2_000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        manifest = write_estate(root / "estate", assets, tenant="acme")
        generate_s = time.perf_counter() - started
        files = sorted((root / "estate").glob("*.parquet"))
        floor = floor_scan(files)
        hub = LocalHub(root / "hub")
        report = run_backfill(
            hub,
            QuarantineStore(root / "quarantine"),
            LilyConfigFile(),
            "acme",
            str(root / "estate"),
            batch_rows=batch_rows,
        )
        naive = naive_rate(files, naive_sample)
        counts = hub.status_counts("acme")
    rate = report.rows_per_s
    return {
        "benchmark": "backfill",
        "assets": assets,
        "batch_rows": batch_rows,
        "generate_s": round(generate_s, 2),
        "files": len(files),
        "estate": getattr(manifest, "counts", None) or str(manifest),
        "backfill": {
            "seconds": round(report.seconds, 2),
            "assets_per_s": round(rate),
            "stage_seconds": report.stage_seconds,
            "applied": report.applied,
            "quarantined": report.quarantined,
            "hub_active": counts.get("ACTIVE", 0),
        },
        "floor_polars_scan_rows_per_s": round(floor),
        "naive_pyatlan_rows_per_s": round(naive),
        "speedup_over_naive": round(rate / naive, 1) if naive else None,
        "peak_rss_mib": _peak_rss_mib(),
        "billion_hours_one_node": round(BILLION / rate / 3600, 1) if rate else None,
        "billion_hours_on_pods": {
            str(n): round(BILLION / (rate * n) / 3600, 1) if rate else None for n in (8, 32)
        },
        "billion_note": "pods scale only where the hub takes one writer per shard "
        "(Atlan; LocalHub serialises writers on its file)",
    }
