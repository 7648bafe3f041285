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

What an operator does with them (`lily batches`, and the UI's job): `list_batches` shows each
pending batch and its state, `release_batch` drops its claim so that the next run takes it,
and `discard_batch` moves its events to the tenant's quarantine (reason
`discarded_by_operator`, so nothing is lost) and the batch to `discarded/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from lily_dagster.lib.crypto import Ciphers, TenantCipher, ciphers_of, plaintext
from lily_dagster.lib.durable import fsync_dir, write_atomic, write_text_atomic
from lily_dagster.lib.envelope import event_id_of, make_rejects
from lily_dagster.lib.gdpr.payload import scrub_payload_column
from lily_dagster.lib.gdpr.subject import Subject
from lily_dagster.lib.logs import log_stage
from lily_dagster.lib.metrics.store import MetricsStore
from lily_dagster.lib.metrics.updates import stage
from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster.lib.reasons import Reason
from lily_dagster.settings import Settings

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


# Where a batch's files are: pending until the hub holds it, then applied or discarded
# (their files stay until the run retention removes them).
BATCH_STATES = ("pending", "applied", "discarded")


class StagingArea:
    """Batch files are sealed with the tenant's cipher (`ciphers`); a manifest holds no
    content (ids, counts, source positions) and stays plaintext, so listing batches needs
    no key."""

    def __init__(
        self, root: Path, ciphers: Ciphers = plaintext, metrics: MetricsStore | None = None
    ) -> None:
        self.root = root
        self.ciphers = ciphers
        self.metrics = metrics  # counts landed events (lily_events_total)

    @classmethod
    def from_settings(cls, settings: Settings) -> StagingArea:
        """The staging area under $LILY_HOME, sealed with the tenants' keys."""
        return cls(settings.staging_dir, ciphers_of(settings), MetricsStore.from_settings(settings))

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
        discarded = self._dir(tenant, "discarded") / f"{batch_id}.json"
        if applied.exists() or discarded.exists():  # a replayed tick: this batch was dealt with
            return manifest
        pending = self._dir(tenant, "pending")
        cipher = self.ciphers(tenant)
        landed = frame.cast(LANDED_SCHEMA)  # type: ignore[arg-type]
        write_atomic(pending / f"{batch_id}.parquet", lambda tmp: cipher.write_parquet(landed, tmp))
        write_text_atomic(pending / f"{batch_id}.json", json.dumps(manifest.__dict__))
        if self.metrics is not None:
            arrived = stage(tenant, "landed", frame.height)
            self.metrics.try_record(arrived, key=f"landed:{tenant}:{batch_id}")
        ids = (event_id_of(v) for v in landed.get_column("value"))  # read only at DEBUG
        log_stage("landed", tenant, ids, batch_id=batch_id, source=source, events=frame.height)
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

    def release(
        self, tenant: str, batch_id: str, owner: str, max_releases: int | None = MAX_RELEASES
    ) -> bool:
        """Drop `owner`'s claim on a pending batch (its run died), unless the batch was
        released `max_releases` times already (None: no limit, an operator's release);
        whether it was. The release is recorded: the sweep's run key counts releases, so
        the batch gets a run key no earlier run had."""
        pending = self._dir(tenant, "pending")
        released = self.releases(tenant, batch_id)
        if self.claimed_by(tenant, batch_id) != owner:
            return False
        if max_releases is not None and len(released) >= max_releases:
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
        cipher = self.ciphers(tenant)
        frames: list[pl.DataFrame] = []
        manifests: list[BatchManifest] = []
        for batch_id in batch_ids:
            manifest_path = pending / f"{batch_id}.json"
            if not manifest_path.exists():
                continue
            manifests.append(BatchManifest(**json.loads(manifest_path.read_text())))
            frame = cipher.read_parquet(pending / f"{batch_id}.parquet")
            frames.append(frame.with_columns(pl.lit(batch_id, pl.String).alias("batch_id")))
        if not frames:
            empty = pl.DataFrame(schema={**LANDED_SCHEMA, "batch_id": pl.String()})
            return empty, manifests
        return pl.concat(frames, how="vertical"), manifests

    def mark_applied(self, tenant: str, batch_ids: list[str], run_id: str | None = None) -> None:
        """Move the batches to `applied/`, naming the run that applied them
        (`{batch_id}.run`, read by `lily trace`)."""
        moved = self._move_out(tenant, batch_ids, "applied")
        for batch_id in moved if run_id else []:
            write_text_atomic(self._dir(tenant, "applied") / f"{batch_id}.run", run_id or "")

    def manifest(self, tenant: str, state: str, batch_id: str) -> dict[str, Any]:
        """A batch's manifest in `state` (BatchManifest fields), {} when it is not there."""
        try:
            return dict(json.loads((self._dir(tenant, state) / f"{batch_id}.json").read_text()))
        except FileNotFoundError:
            return {}

    def run_of(self, tenant: str, state: str, batch_id: str) -> str | None:
        """The run that holds a pending batch (its claim), or that applied one."""
        name = f"{batch_id}.claim" if state == "pending" else f"{batch_id}.run"
        try:
            return (self._dir(tenant, state) / name).read_text().removeprefix(ISOLATE_PREFIX)
        except FileNotFoundError:
            return None

    def discard(self, tenant: str, batch_id: str) -> bool:
        """Move a pending batch to `discarded/`, its claim and releases dropped; whether it
        was pending. Landing it again is a no-op."""
        return bool(self._move_out(tenant, [batch_id], "discarded"))

    def _move_out(self, tenant: str, batch_ids: list[str], state: str) -> list[str]:
        """Move pending batches to `state/` (applied, discarded); the ones that were pending."""
        pending = self._dir(tenant, "pending")
        target = self._dir(tenant, state)
        target.mkdir(parents=True, exist_ok=True)
        moved: list[str] = []
        for batch_id in batch_ids:
            manifest = pending / f"{batch_id}.json"
            if not manifest.exists():
                continue
            # Manifest first: once it is out of pending/, the batch no longer counts as pending.
            os.replace(manifest, target / manifest.name)
            data = pending / f"{batch_id}.parquet"
            if data.exists():
                os.replace(data, target / data.name)
            (pending / f"{batch_id}.claim").unlink(missing_ok=True)
            (pending / f"{batch_id}.released").unlink(missing_ok=True)
            moved.append(batch_id)
        fsync_dir(target)
        fsync_dir(pending)
        return moved

    def erase_subject(self, tenant: str, subject: Subject, dry_run: bool = False) -> int:
        """Erase `subject` from the payloads of the tenant's batches (pending, applied and
        discarded: their files stay until the run retention removes them); how many
        batches mentioned it (dry_run: would be rewritten). Each file is replaced
        atomically, so a crash leaves it whole, and running it again finishes the job."""
        cipher = self.ciphers(tenant)
        changed = 0
        for _state, path, frame in self.batch_files(tenant):
            scrubbed = _scrub_landed(subject, frame)
            if scrubbed is None:
                continue
            changed += 1
            if not dry_run:
                _rewrite(cipher, path, scrubbed)
        return changed

    def batch_files(
        self, tenant: str, written_after: float | None = None
    ) -> Iterator[tuple[str, Path, pl.DataFrame]]:
        """(state, file, its landed rows opened) of every batch of the tenant (written after
        `written_after`, a Unix time, where given), pending first: a batch a run marks
        applied meanwhile is met again under applied/."""
        cipher = self.ciphers(tenant)
        for state in BATCH_STATES:
            directory = self._dir(tenant, state)
            for path in sorted(directory.glob("*.parquet")) if directory.is_dir() else []:
                try:
                    if written_after is not None and path.stat().st_mtime < written_after:
                        continue
                    frame = cipher.read_parquet(path)
                except FileNotFoundError:  # moved on meanwhile: met again in its next state
                    continue
                yield state, path, frame

    def dealt_with(self, tenant: str, batch_id: str) -> str | None:
        """ "applied" or "discarded" for a batch that left pending that way, else None."""
        for state in ("applied", "discarded"):
            if (self._dir(tenant, state) / f"{batch_id}.json").exists():
                return state
        return None


def _rewrite(cipher: TenantCipher, path: Path, frame: pl.DataFrame) -> None:
    """Replace a batch file. If the batch left this state meanwhile (marked applied while
    it was rewritten), the copy just written is an orphan and goes: the batch's own file is
    met again under its new state (states are erased in BATCH_STATES order)."""
    write_atomic(path, lambda tmp: cipher.write_parquet(frame, tmp))
    if not path.with_suffix(".json").exists():
        path.unlink(missing_ok=True)


def _scrub_landed(subject: Subject, frame: pl.DataFrame) -> pl.DataFrame | None:
    """A landed frame with `subject` erased from its payloads; None when none mentions it
    (origins and times hold no content)."""
    scrubbed = scrub_payload_column(subject, frame.get_column("value"))
    return None if scrubbed is None else frame.with_columns(scrubbed)


# --- an operator's view of pending batches (`lily batches`, the UI's job) -----------------

UNCLAIMED, CLAIMED, ISOLATED = "unclaimed", "claimed", "isolated"

# Whether the run with this id, or a re-execution of it, has not ended (claims name the root
# run of a re-execution chain). The caller asks Dagster; these functions do not import it.
RunInFlight = Callable[[str], bool]


class BatchError(ValueError):
    """An operator's action on a batch that cannot be done; the message is one line."""


@dataclass(frozen=True)
class PendingBatch:
    """A pending batch as an operator sees it."""

    tenant: str
    batch_id: str
    # UNCLAIMED: the next run of the tenant takes it; CLAIMED: run `run_id` took it (a run
    # that failed in a step leaves it so, for an operator); ISOLATED: multi-tenant run
    # `run_id` left it to a run of its tenant alone.
    state: str
    run_id: str | None
    releases: int  # how often its claim was released (a dead run's, or an operator's)
    released_from: list[str]  # the runs whose claims were released, oldest first
    landed_at: str | None
    events: int | None
    source: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_batches(staging: StagingArea, tenant: str) -> list[PendingBatch]:
    """The tenant's pending batches with their state, by id."""
    found: list[PendingBatch] = []
    for batch_id in staging.pending(tenant):
        batch = pending_batch(staging, tenant, batch_id)
        if batch is not None:  # applied or discarded meanwhile
            found.append(batch)
    return found


def pending_batch(staging: StagingArea, tenant: str, batch_id: str) -> PendingBatch | None:
    """One pending batch with its state; None when it is not pending."""
    try:
        manifest = json.loads((staging.root / tenant / "pending" / f"{batch_id}.json").read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    owner = staging.claimed_by(tenant, batch_id)
    state = UNCLAIMED if owner is None else CLAIMED
    if owner is not None and owner.startswith(ISOLATE_PREFIX):
        state, owner = ISOLATED, owner.removeprefix(ISOLATE_PREFIX)
    released = staging.releases(tenant, batch_id)
    return PendingBatch(
        tenant=tenant,
        batch_id=batch_id,
        state=state,
        run_id=owner,
        releases=len(released),
        released_from=[r.removeprefix(ISOLATE_PREFIX) for r in released],
        landed_at=manifest.get("landed_at"),
        events=manifest.get("events"),
        source=manifest.get("source"),
    )


def _batch_to_act_on(
    staging: StagingArea, tenant: str, batch_id: str, in_flight: RunInFlight | None
) -> PendingBatch:
    """The pending batch, unless it is unknown or a run still in flight holds it."""
    batch = pending_batch(staging, tenant, batch_id)
    if batch is None:
        state = staging.dealt_with(tenant, batch_id)
        why = f"it was {state} already" if state else "`lily batches list` shows the pending ones"
        raise BatchError(f"tenant {tenant} has no pending batch {batch_id!r}: {why}")
    if batch.state == CLAIMED and batch.run_id and in_flight and in_flight(batch.run_id):
        raise BatchError(
            f"batch {batch_id} of {tenant} is held by run {batch.run_id}, which has not "
            "ended: wait for it, or terminate it in the Dagster UI first"
        )
    return batch


def release_batch(
    staging: StagingArea, tenant: str, batch_id: str, in_flight: RunInFlight | None = None
) -> dict[str, Any]:
    """Drop the claim on a pending batch so that the next run of its tenant takes it (the
    sweep runs it within a tick when no run of the tenant is in flight). BatchError for an
    unknown batch, or one a run still in flight holds (`in_flight`). Releasing a batch no
    run holds changes nothing."""
    batch = _batch_to_act_on(staging, tenant, batch_id, in_flight)
    result: dict[str, Any] = {"tenant": tenant, "batch_id": batch_id, "was": batch.state}
    if batch.state == UNCLAIMED:
        return {**result, "released": False, "detail": "no run holds it: the next run takes it"}
    owner = staging.claimed_by(tenant, batch_id)
    if owner is None or not staging.release(tenant, batch_id, owner, max_releases=None):
        raise BatchError(f"batch {batch_id} of {tenant} changed meanwhile: list it again")
    return {**result, "released": True, "run_id": batch.run_id, "releases": batch.releases + 1}


def discard_batch(
    staging: StagingArea,
    quarantine: QuarantineStore,
    tenant: str,
    batch_id: str,
    in_flight: RunInFlight | None = None,
) -> dict[str, Any]:
    """Take a pending batch out of the pipeline without losing it: each of its events goes
    to the tenant's quarantine (reason `discarded_by_operator`, its payload byte for byte:
    `lily quarantine replay` can send it again), then the batch moves to `discarded/`.
    BatchError for an unknown batch, or one a run still in flight holds (`in_flight`)."""
    batch = _batch_to_act_on(staging, tenant, batch_id, in_flight)
    frame, _ = staging.read(tenant, [batch_id])
    detail = (
        f"discarded by an operator from pending batch {batch_id} (source {batch.source}, "
        f"landed {batch.landed_at}, {batch.state}"
        + (f" by run {batch.run_id})" if batch.run_id else ")")
    )
    rejects = make_rejects(
        tenant,
        [
            (event_id_of(value), Reason.DISCARDED_BY_OPERATOR, detail, value, origin)
            for value, origin in zip(frame["value"], frame["origin"], strict=True)
        ],
    )
    # Quarantined first: a crash in between leaves the batch pending, and discarding it
    # again rewrites the same quarantine file.
    quarantined = quarantine.add(tenant, f"discarded-{batch_id}", rejects)
    if not staging.discard(tenant, batch_id):
        raise BatchError(f"batch {batch_id} of {tenant} changed meanwhile: list it again")
    return {
        "tenant": tenant,
        "batch_id": batch_id,
        "was": batch.state,
        "run_id": batch.run_id,
        "discarded": True,
        "quarantined": quarantined,
        "reason": Reason.DISCARDED_BY_OPERATOR.value,
    }
