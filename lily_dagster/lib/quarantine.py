"""Per-tenant quarantine: every rejected event with its reason code and raw payload.

Append-only Parquet files under `quarantine/{tenant}/`, one per batch and stage, written
atomically; the same batch quarantined again overwrites its own file, and readers dedupe
by `quarantine_id` (a hash of the payload's bytes), so replays never double-count.

A payload is kept byte for byte: as text (`raw`) when it is UTF-8, else as its bytes
(`raw_bytes`). Files of earlier releases, which have no `raw_bytes`, read as text.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import polars as pl

from lily_dagster.lib.durable import write_atomic
from lily_dagster.lib.envelope import REJECT_SCHEMA
from lily_dagster.lib.strict_json import dumps

REPLAYED_SCHEMA: dict[str, pl.DataType] = {
    "quarantine_id": pl.String(),
    "replayed_at": pl.Datetime("us", "UTC"),
}


class QuarantineStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def add(self, tenant: str, name: str, rejects: pl.DataFrame) -> int:
        """Durably keep `rejects` under the file `name`; returns how many were kept."""
        if rejects.is_empty():
            return 0
        frame = _conform(rejects.with_columns(pl.lit(tenant).alias("tenant")))
        write_atomic(self.root / tenant / f"{name}.parquet", frame.write_parquet)
        return frame.height

    def read(self, tenant: str, reasons: list[str] | None = None) -> pl.DataFrame:
        """What the tenant's quarantine holds now: each payload once (its latest rejection),
        less those replayed since they were rejected; optionally only some reasons."""
        directory = self.root / tenant
        files = sorted(directory.glob("*.parquet")) if directory.is_dir() else []
        if not files:
            return pl.DataFrame(schema=REJECT_SCHEMA)
        frame = pl.concat([_conform(pl.read_parquet(f)) for f in files], how="vertical")
        frame = frame.sort("quarantined_at").unique(
            "quarantine_id", keep="last", maintain_order=True
        )
        replayed = self._replayed(tenant)
        if replayed.height:
            frame = (
                frame.join(replayed, on="quarantine_id", how="left")
                .filter(
                    pl.col("replayed_at").is_null()
                    | (pl.col("quarantined_at") > pl.col("replayed_at"))
                )
                .drop("replayed_at")
            )
        if reasons:
            frame = frame.filter(pl.col("reason").is_in(reasons))
        return frame

    def _replayed(self, tenant: str) -> pl.DataFrame:
        directory = self.root / tenant / "_replayed"
        files = sorted(directory.glob("*.parquet")) if directory.is_dir() else []
        if not files:
            return pl.DataFrame(schema=REPLAYED_SCHEMA)
        return (
            pl.concat([pl.read_parquet(f) for f in files])
            .group_by("quarantine_id")
            .agg(pl.col("replayed_at").max())
        )

    def mark_replayed(
        self, tenant: str, name: str, quarantine_ids: list[str], at: datetime
    ) -> None:
        """Record that these entries were sent through the pipeline again at `at`; if they
        fail again they are rejected after `at` and show again."""
        frame = pl.DataFrame(
            {"quarantine_id": quarantine_ids, "replayed_at": [at] * len(quarantine_ids)},
            schema=REPLAYED_SCHEMA,
        )
        write_atomic(self.root / tenant / "_replayed" / f"{name}.parquet", frame.write_parquet)

    def tenants(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith(".")
        )

    def counts_by_reason(self, tenant: str) -> dict[str, int]:
        frame = self.read(tenant)
        counts = frame.group_by("reason").len().sort("reason")
        return {r: int(n) for r, n in counts.iter_rows()}

    def export(self, tenant: str) -> Iterator[str]:
        """JSON Lines of CONTRACT.md §2: {"event_id", "reason", "detail", "raw"}, `raw` the
        payload's text; for a payload that is not UTF-8, `raw` is null and `raw_base64`
        holds its exact bytes."""
        for row in self.read(tenant).iter_rows(named=True):
            line = {k: row[k] for k in ("event_id", "reason", "detail", "raw")}
            if row["raw_bytes"] is not None:
                line["raw"] = None
                line["raw_base64"] = base64.b64encode(row["raw_bytes"]).decode("ascii")
            yield dumps(line, ensure_ascii=False)


def payload_bytes() -> pl.Expr:
    """The exact bytes of a quarantined payload (of REJECT_SCHEMA rows), as it arrived."""
    return pl.coalesce(pl.col("raw_bytes"), pl.col("raw").cast(pl.Binary))


def _conform(frame: pl.DataFrame) -> pl.DataFrame:
    """A rejects frame in REJECT_SCHEMA: columns an earlier release did not write (raw_bytes)
    are null."""
    missing = [pl.lit(None, dtype=t).alias(c) for c, t in REJECT_SCHEMA.items() if c not in frame]
    if missing:
        frame = frame.with_columns(missing)
    return frame.select(list(REJECT_SCHEMA)).cast(REJECT_SCHEMA)  # type: ignore[arg-type]
