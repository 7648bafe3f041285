"""Per-tenant quarantine: every rejected event with its reason code and raw payload.

Append-only Parquet files under `quarantine/{tenant}/`, one per batch and stage, written
atomically; the same batch quarantined again overwrites its own file, and readers dedupe
by `quarantine_id` (a hash of the payload), so replays never double-count.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from lily_dagster.lib.durable import write_atomic
from lily_dagster.lib.envelope import REJECT_SCHEMA


class QuarantineStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def add(self, tenant: str, name: str, rejects: pl.DataFrame) -> int:
        """Durably keep `rejects` under the file `name`; returns how many were kept."""
        if rejects.is_empty():
            return 0
        frame = rejects.with_columns(pl.lit(tenant).alias("tenant")).cast(REJECT_SCHEMA)  # type: ignore[arg-type]
        write_atomic(self.root / tenant / f"{name}.parquet", frame.write_parquet)
        return frame.height

    def read(self, tenant: str) -> pl.DataFrame:
        directory = self.root / tenant
        files = sorted(directory.glob("*.parquet")) if directory.is_dir() else []
        if not files:
            return pl.DataFrame(schema=REJECT_SCHEMA)
        frame = pl.concat([pl.read_parquet(f) for f in files], how="vertical")
        return frame.sort("quarantined_at").unique(
            "quarantine_id", keep="first", maintain_order=True
        )

    def tenants(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(d.name for d in self.root.iterdir() if d.is_dir())

    def counts_by_reason(self, tenant: str) -> dict[str, int]:
        frame = self.read(tenant)
        counts = frame.group_by("reason").len().sort("reason")
        return {r: int(n) for r, n in counts.iter_rows()}

    def export(self, tenant: str) -> Iterator[str]:
        """JSON Lines of CONTRACT.md §2: {"event_id", "reason", "detail", "raw"}."""
        for row in self.read(tenant).iter_rows(named=True):
            yield json.dumps(
                {k: row[k] for k in ("event_id", "reason", "detail", "raw")}, ensure_ascii=False
            )
