"""Bulk backfills: a tenant's whole estate from envelope files (JSON Lines or Parquet, local
or S3) through the live path's gates, hooks and hub writer, in bounded batches.

- Memory is bounded by `batch_rows`: files are read lazily, batch by batch.
- Shards split the input deterministically by a hash of `qualified_name`, so two shards
  never write the same record and each can run in its own pod.
- Each batch's hub upsert records the shard's checkpoint (the row of the source the batch
  ends at) in the same transaction: a killed backfill resumes after its last committed
  batch, whatever batch size the new run uses, and no batch is applied twice. Quarantined
  rows are written under a per-batch name (its first row), so a batch redone after a crash
  replaces its own entries instead of adding to them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl

from lily_dagster.lib.crypto.sealer import PendingSeal
from lily_dagster.lib.decode import decode_frame, fill_raw, scan_envelopes
from lily_dagster.lib.decode.scan import skipped_origin
from lily_dagster.lib.envelope import empty_events
from lily_dagster.lib.hooks import HookContext, run_chain, tenant_chain
from lily_dagster.lib.hub.base import MetadataHub, UpsertResult
from lily_dagster.lib.metrics import MetricsStore
from lily_dagster.lib.metrics.store import Update
from lily_dagster.lib.metrics.updates import applied, stages
from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster.lib.validation import all_rules, split_valid
from lily_dagster.settings import ConfigError, LilyConfigFile

# Seed of the shard hash: fixed, so every pod of one deployment (one image, one polars)
# shards alike.
_SHARD_SEED = 0x4C494C59


class BackfillError(ConfigError):
    """A backfill that cannot start: bad shard spec, unreadable source."""


@dataclass
class BackfillReport:
    tenant: str
    source: str
    shard: int
    shards: int
    batches: int = 0  # batches applied by this run
    resumed_at_row: int = 0  # rows of the source committed before this run
    rows_read: int = 0
    rows_in_shard: int = 0
    applied: int = 0
    quarantined: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # Shards of this shard count not finished yet (after this run): the tenant's estate is
    # whole once none is left.
    shards_left: list[int] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.rows_read / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows_per_s": round(self.rows_per_s)}

    def record(self, applied: int, result: UpsertResult) -> None:
        """A batch of `applied` events committed to the hub with `result`."""
        self.batches += 1
        self.applied += applied
        self.created += result.created
        self.updated += result.updated
        self.unchanged += result.unchanged


def source_prefix(source: str) -> str:
    return f"backfill:{hashlib.sha256(source.encode()).hexdigest()[:16]}:"


def checkpoint_key(source: str, shards: int, shard: int) -> str:
    """The key of the row of the source a shard has committed up to (rows, not batches: a
    resumed load may use another batch size); `<key>:done` holds the source's row count
    once the shard has read it all."""
    return f"{source_prefix(source)}{shards}:{shard}"


def shard_progress(hub: MetadataHub, tenant: str, source: str) -> dict[int, dict[int, bool]]:
    """For each shard count `source` was loaded with: shard → whether it finished."""
    progress: dict[int, dict[int, bool]] = {}
    for key in hub.checkpoints(tenant, source_prefix(source)):
        shards, shard, *done = key.removeprefix(source_prefix(source)).split(":")
        finished = progress.setdefault(int(shards), {}).get(int(shard), False)
        progress[int(shards)][int(shard)] = finished or bool(done)
    return progress


def shards_left(progress: dict[int, dict[int, bool]], shards: int) -> list[int]:
    """The shards of a `shards`-way load not finished yet."""
    done = progress.get(shards, {})
    return [s for s in range(shards) if not done.get(s, False)]


def check_coverage(hub: MetadataHub, tenant: str, source: str, shards: int) -> None:
    """Refuse a shard spec that would not line up with a load of the same source still
    under way with another: their shards split the records differently, so finishing
    neither would leave records out while each looked partly done."""
    progress = shard_progress(hub, tenant, source)
    for other, done in sorted(progress.items()):
        left = shards_left(progress, other)
        if other != shards and left:
            finished = sorted(s for s, ok in done.items() if ok)
            raise BackfillError(
                f"{source} is being loaded for {tenant} in {other} shards (finished: "
                f"{finished or 'none'}; still to run: {left}); run those with --shards "
                f"{other}, then load it again in {shards} shards if needed"
            )


def in_shard(shards: int, shard: int) -> pl.Expr:
    """Rows of this shard: a fixed-seed hash of the qualified name, modulo the shard count."""
    if shards == 1:
        return pl.lit(True)
    return pl.col("qualified_name").hash(seed=_SHARD_SEED) % shards == shard


def check_shards(shards: int, shard: int) -> None:
    if shards < 1:
        raise BackfillError(f"--shards must be at least 1, got {shards}")
    if not 0 <= shard < shards:
        raise BackfillError(f"--shard must be in 0..{shards - 1}, got {shard}")


def run_backfill(
    hub: MetadataHub,
    quarantine: QuarantineStore,
    config: LilyConfigFile,
    tenant: str,
    source: str,
    *,
    shards: int = 1,
    shard: int = 0,
    batch_rows: int = 500_000,
    max_event_bytes: int = 1 << 20,
    progress: Callable[[BackfillReport], None] | None = None,
    metrics: MetricsStore | None = None,
) -> BackfillReport:
    """Load `source` into the tenant's hub, resuming after the shard's checkpoint."""
    check_shards(shards, shard)
    check_coverage(hub, tenant, source, shards)
    key = checkpoint_key(source, shards, shard)
    done = hub.checkpoint(tenant, key)
    report = BackfillReport(tenant, source, shard, shards, resumed_at_row=done or 0)
    chain = tenant_chain(config, tenant, "pre_ingest")
    rules = all_rules(expected_tenant=tenant)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    @contextmanager
    def clock(stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0

    def prepared() -> Iterator[tuple[int, pl.DataFrame, int, int]]:
        """Each batch not yet committed (with the row of the source it ends at), gated and
        enriched, its rejects quarantined; with its events read (landed) and valid."""
        end = 0
        for frame, origin in scan_envelopes(source, batch_rows):
            start, end = end, end + frame.height
            report.rows_read += frame.height
            if end <= report.resumed_at_row:
                continue  # committed by an earlier run
            if start < report.resumed_at_row:  # the checkpoint falls inside: not its head
                skip = report.resumed_at_row - start
                frame, origin, start = frame.slice(skip), skipped_origin(origin, skip), start + skip
            with clock("decode"):
                decoded = decode_frame(frame, tenant, origin, max_event_bytes, lazy_raw=True)
            events = decoded.events.filter(in_shard(shards, shard))
            report.rows_in_shard += events.height
            with clock("validate"):
                checked = split_valid(events, rules, tenant)
            ctx = HookContext(tenant=tenant, hub_lookup=lookup)
            with clock("hooks"):
                chained = run_chain(checked.valid, chain, ctx)
            # Rows that did not decode have no trustworthy name to shard by: shard 0 keeps
            # them.
            rejects = [r for r in (checked.rejects, chained.rejects) if r.height]
            if shard == 0 and decoded.rejects.height:
                rejects.insert(0, decoded.rejects)
            if rejects:
                kept = fill_raw(pl.concat(rejects), frame, origin, max_event_bytes)
                report.quarantined += quarantine.add(tenant, f"{stem}-{start}", kept)
            arrived = events.height + (decoded.rejects.height if shard == 0 else 0)
            yield end, chained.events, arrived, checked.valid.height

    def lookup(names: list[str]) -> set[str]:
        """Names the hub holds once the batch being written commits: the lineage check of
        batch i+1 runs while batch i is written, and must see batch i as a sequential load
        would."""
        if in_flight is None:
            return hub.contains(tenant, names)
        writing = in_flight[1].get_column("qualified_name")
        found = set(writing.filter(writing.is_in(names)).to_list())
        return found | hub.contains(tenant, [n for n in names if n not in found])

    # Quarantine entries of a batch are named by its first row (the hub's by its last): a
    # batch redone after a crash replaces its own entries.
    stem = key.replace(":", "-")

    def write(end: int, events: pl.DataFrame, ahead: PendingSeal) -> UpsertResult:
        with clock("seal_wait"):
            sealed = ahead.result()
        t0 = time.perf_counter()
        result = hub.upsert(tenant, events, checkpoint=(key, end), sealed_ahead=sealed)
        timings["hub"] = timings.get("hub", 0.0) + time.perf_counter() - t0
        return result

    def committed(end: int, events: pl.DataFrame, result: UpsertResult, read: Update) -> None:
        refused = 0
        if result.rejects is not None and result.rejects.height:
            refused = quarantine.add(tenant, f"{stem}-hub-{end}", result.rejects)
            report.quarantined += refused
        if metrics is not None and result.state is not None:
            # Counted with the commit, under its end: a load resumed after a crash (even
            # with other batch sizes) starts at the last commit, so no rows count twice.
            taken = read.merge(applied(tenant, events.height - refused, result.state.status_counts))
            metrics.try_record(taken, key=f"backfill:{tenant}:{key}:{end}:applied")
        report.record(events.height, result)
        report.seconds = time.perf_counter() - started
        report.stage_seconds = {k: round(v, 2) for k, v in timings.items()}
        if progress is not None:
            progress(report)

    # Three stages, each in a thread of its own: this one prepares batch i+1 while batch i
    # is sealed, then written; batch i+1 is sealed while batch i is written (AES holds the
    # GIL, polars and DuckDB release it). One write in flight at a time, in order, and
    # progress is reported for batch i before batch i+1 is written: memory holds three
    # batches at most.
    in_flight: tuple[int, pl.DataFrame, Future[UpsertResult], Update] | None = None
    with (
        hub.bulk_sealer(tenant) as sealer,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="backfill-hub") as writer,
    ):
        for end, events, arrived, valid in prepared():
            ahead = sealer.submit(events)
            if in_flight is not None:
                committed(*in_flight[:2], in_flight[2].result(), in_flight[3])
            read = stages(tenant, landed=arrived, valid=valid)
            in_flight = (end, events, writer.submit(write, end, events, ahead), read)
        if in_flight is not None:
            committed(*in_flight[:2], in_flight[2].result(), in_flight[3])
    # The whole source is read: the shard is finished (a rerun applies nothing).
    hub.upsert(tenant, empty_events(), checkpoint=(f"{key}:done", report.rows_read))
    report.shards_left = shards_left(shard_progress(hub, tenant, source), shards)
    report.seconds = time.perf_counter() - started
    report.stage_seconds = {k: round(v, 2) for k, v in timings.items()}
    return report
