"""Durable per-tenant landing zone between a source (Kafka, webhook inbox) and the assets.

A batch is a Parquet file of raw payloads plus a JSON manifest, both under
`staging/{tenant}/pending/`. The manifest is written last, so a batch exists exactly when
its manifest does. Once the hub holds the batch, it moves to `applied/`.

A run that takes a batch claims it (`{batch_id}.claim`, naming the run, or the first run
of a re-execution chain): a run that takes every unclaimed pending batch of its tenant (a
coalescing run) leaves alone the batches a failed run took, which wait for an operator.
A run of several tenants that finds a tenant's batches would fail a blocking check does not
fail for everyone: it leaves them to a run of that tenant alone, claimed as
`isolate:{run_id}` (see `isolate` and `isolated`). A run that died (its process killed,
or stopped by an operator) before any step failed releases its claims (`release`): its
batches go to the next run, at most MAX_RELEASES times (`{batch_id}.released` names the
runs), so a batch that kills every worker that takes it ends up waiting for an operator.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from lily_dagster.lib.durable import fsync_dir, write_atomic, write_text_atomic

LANDED_SCHEMA: dict[str, pl.DataType] = {
    "origin": pl.String(),  # e.g. kafka:topic/partition/offset
    "value": pl.Binary(),  # the payload exactly as received
    "received_at": pl.Datetime("us", "UTC"),  # broker or receiver timestamp
}


def landed_frame(
    origins: Sequence[str], values: Sequence[bytes], received_at: Sequence[datetime]
) -> pl.DataFrame:
    """Raw payloads in the landing format (LANDED_SCHEMA); every source builds its batch here."""
    return pl.DataFrame(
        {"origin": origins, "value": values, "received_at": received_at}, schema=LANDED_SCHEMA
    )


def empty_landed() -> pl.DataFrame:
    """No landed events: what `StagingArea.read` gives plus the `tenant` column of runs."""
    return pl.DataFrame(schema={**LANDED_SCHEMA, "batch_id": pl.String(), "tenant": pl.String()})


@dataclass(frozen=True)
class BatchManifest:
    batch_id: str
    tenant: str
    source: str  # kafka | webhook | replay
    events: int
    landed_at: str
    # Source position information, e.g. Kafka offset ranges and lag at landing time.
    details: dict[str, Any] = field(default_factory=dict)


# Claim owner prefix of batches a multi-tenant run left to a run of their tenant alone.
ISOLATE_PREFIX = "isolate:"
# Times a batch's claim is released after the run holding it died: a batch whose runs keep
# dying (it runs the worker out of memory, say) then waits for an operator.
MAX_RELEASES = 3


def batch_set_key(batch_ids: Iterable[str]) -> str:
    """Stable name for a set of batches, so a retried run overwrites its own files."""
    return hashlib.sha256(",".join(sorted(set(batch_ids))).encode()).hexdigest()[:20]


class StagingArea:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, tenant: str, state: str) -> Path:
        return self.root / tenant / state

    def land(
        self, tenant: str, batch_id: str, source: str, frame: pl.DataFrame, details: dict[str, Any]
    ) -> BatchManifest:
        """Durably store a batch; landing the same batch_id again overwrites it identically."""
        manifest = BatchManifest(
            batch_id=batch_id,
            tenant=tenant,
            source=source,
            events=frame.height,
            landed_at=datetime.now(UTC).isoformat(),
            details=details,
        )
        applied = self._dir(tenant, "applied") / f"{batch_id}.json"
        if applied.exists():  # a replayed tick: the hub already holds this batch
            return manifest
        pending = self._dir(tenant, "pending")
        write_atomic(
            pending / f"{batch_id}.parquet",
            lambda tmp: frame.cast(LANDED_SCHEMA).write_parquet(tmp),  # type: ignore[arg-type]
        )
        write_text_atomic(pending / f"{batch_id}.json", json.dumps(manifest.__dict__))
        return manifest

    def pending(self, tenant: str) -> list[str]:
        directory = self._dir(tenant, "pending")
        if not directory.is_dir():
            return []
        return sorted(p.stem for p in directory.glob("*.json"))

    def claim(self, tenant: str, batch_ids: Iterable[str], owner: str) -> None:
        """Record that the run `owner` took these pending batches."""
        pending = self._dir(tenant, "pending")
        for batch_id in batch_ids:
            if (pending / f"{batch_id}.json").exists():
                write_text_atomic(pending / f"{batch_id}.claim", owner)

    def isolate(self, tenant: str, batch_ids: Iterable[str], run_id: str) -> None:
        """Leave these batches to a run of their tenant alone (no coalescing run takes them)."""
        self.claim(tenant, batch_ids, f"{ISOLATE_PREFIX}{run_id}")

    def isolated(self, tenant: str) -> list[str]:
        """Pending batches a multi-tenant run left to a run of their tenant alone, by id."""
        return [
            batch_id
            for batch_id in self.pending(tenant)
            if (self.claimed_by(tenant, batch_id) or "").startswith(ISOLATE_PREFIX)
        ]

    def claims(self, tenant: str) -> dict[str, str]:
        """Pending batch id → the run that took it, for the batches a run took."""
        claims = {b: self.claimed_by(tenant, b) for b in self.pending(tenant)}
        return {batch_id: owner for batch_id, owner in claims.items() if owner}

    def releases(self, tenant: str, batch_id: str) -> list[str]:
        """The runs that died holding this batch, oldest first."""
        path = self._dir(tenant, "pending") / f"{batch_id}.released"
        try:
            return path.read_text().split()
        except FileNotFoundError:
            return []

    def release(self, tenant: str, batch_id: str, owner: str) -> bool:
        """Drop `owner`'s claim on a pending batch (its run died), unless the batch was
        released MAX_RELEASES times already; whether it was."""
        pending = self._dir(tenant, "pending")
        released = self.releases(tenant, batch_id)
        if self.claimed_by(tenant, batch_id) != owner or len(released) >= MAX_RELEASES:
            return False
        write_text_atomic(pending / f"{batch_id}.released", " ".join([*released, owner]))
        (pending / f"{batch_id}.claim").unlink(missing_ok=True)
        fsync_dir(pending)
        return True

    def claimed_by(self, tenant: str, batch_id: str) -> str | None:
        try:
            return (self._dir(tenant, "pending") / f"{batch_id}.claim").read_text()
        except FileNotFoundError:
            return None

    def unclaimed(self, tenant: str, owner: str | None = None, min_age_s: float = 0) -> list[str]:
        """Pending batches that no run took (or only `owner`), landed at least `min_age_s`
        ago, sorted by id."""
        pending = self._dir(tenant, "pending")
        now = time.time()
        found: list[str] = []
        for batch_id in self.pending(tenant):
            if self.claimed_by(tenant, batch_id) not in (None, owner):
                continue
            if min_age_s > 0:
                try:
                    landed = (pending / f"{batch_id}.json").stat().st_mtime
                except FileNotFoundError:  # applied meanwhile
                    continue
                if now - landed < min_age_s:
                    continue
            found.append(batch_id)
        return found

    def tenants_with_pending(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(d.name for d in self.root.iterdir() if d.is_dir() and self.pending(d.name))

    def read(self, tenant: str, batch_ids: list[str]) -> tuple[pl.DataFrame, list[BatchManifest]]:
        """The pending batches among `batch_ids` (LANDED_SCHEMA plus `batch_id`); ones
        already applied are skipped."""
        pending = self._dir(tenant, "pending")
        frames: list[pl.DataFrame] = []
        manifests: list[BatchManifest] = []
        for batch_id in batch_ids:
            manifest_path = pending / f"{batch_id}.json"
            if not manifest_path.exists():
                continue
            manifests.append(BatchManifest(**json.loads(manifest_path.read_text())))
            frame = pl.read_parquet(pending / f"{batch_id}.parquet")
            frames.append(frame.with_columns(pl.lit(batch_id, pl.String).alias("batch_id")))
        if not frames:
            empty = pl.DataFrame(schema={**LANDED_SCHEMA, "batch_id": pl.String()})
            return empty, manifests
        return pl.concat(frames, how="vertical"), manifests

    def mark_applied(self, tenant: str, batch_ids: list[str]) -> None:
        pending = self._dir(tenant, "pending")
        applied = self._dir(tenant, "applied")
        applied.mkdir(parents=True, exist_ok=True)
        for batch_id in batch_ids:
            manifest = pending / f"{batch_id}.json"
            if not manifest.exists():
                continue
            # Manifest first: once it is in applied/, the batch no longer counts as pending.
            os.replace(manifest, applied / manifest.name)
            data = pending / f"{batch_id}.parquet"
            if data.exists():
                os.replace(data, applied / data.name)
            (pending / f"{batch_id}.claim").unlink(missing_ok=True)
            (pending / f"{batch_id}.released").unlink(missing_ok=True)
        fsync_dir(applied)
        fsync_dir(pending)
