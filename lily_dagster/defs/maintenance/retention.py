"""Run retention (README: Retention): every hour, `run_retention_job` deletes the runs that
ended more than LILY_RUN_RETENTION_DAYS ago (their event logs and captured logs with them)
and the intermediate files no run needs. What it deletes is chosen by lib/retention.py."""

import time
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dagster import (
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    DefaultScheduleStatus,
    OpExecutionContext,
    RunsFilter,
    ScheduleEvaluationContext,
    SkipReason,
    in_process_executor,
    job,
    op,
    schedule,
)
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from lily_dagster.defs.resources import LilyResource
from lily_dagster.lib.metrics import MetricsStore
from lily_dagster.lib.retention import (
    ENDED,
    RunInfo,
    applied_batch_files,
    cutoff,
    io_files,
    io_files_to_delete,
    remove_files,
    runs_to_delete,
)
from lily_dagster.lib.staging import ISOLATE_PREFIX, StagingArea
from lily_dagster.settings import Settings

# Runs deleted per query, and queries per pass (~40 ms a run on SQLite): 5,000 runs an
# hour, ten times what the demo traffic starts.
RUNS_PER_BATCH = 500
MAX_BATCHES = 10
ENDED_STATUSES = [DagsterRunStatus(name) for name in sorted(ENDED)]


def _run_info(record: Any) -> RunInfo:
    return RunInfo(record.dagster_run.run_id, record.dagster_run.status.value, record.end_time)


def ended_runs(instance: DagsterInstance, before: float, limit: int) -> list[RunInfo]:
    """Up to `limit` runs that ended and were last updated before `before`, oldest first."""
    records = instance.get_run_records(
        RunsFilter(statuses=ENDED_STATUSES, updated_before=datetime.fromtimestamp(before, UTC)),
        limit=limit,
        ascending=True,
    )
    return [_run_info(record) for record in records]


def runs_by_id(instance: DagsterInstance, run_ids: set[str]) -> dict[str, RunInfo]:
    ids = sorted(run_ids)
    found: dict[str, RunInfo] = {}
    for start in range(0, len(ids), 500):  # SQLite bounds a query's variables
        for record in instance.get_run_records(RunsFilter(run_ids=ids[start : start + 500])):
            found[record.dagster_run.run_id] = _run_info(record)
    return found


def latest_materialisation_runs(instance: DagsterInstance) -> set[str]:
    """The runs that hold the latest materialisation of an asset, or of one of its
    partitions: two queries per asset, whatever the number of runs."""
    keep: set[str] = set()
    for record in instance.get_asset_records():
        entry = record.asset_entry
        if entry.last_materialization_record is not None:
            keep.add(entry.last_materialization_record.run_id)
        latest = instance.get_latest_storage_id_by_partition(
            entry.asset_key, DagsterEventType.ASSET_MATERIALIZATION
        )
        if latest:
            found = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=entry.asset_key, storage_ids=list(latest.values())),
                limit=len(latest),
            )
            keep |= {r.run_id for r in found.records}
    return keep


def claim_holders(staging: StagingArea) -> set[str]:
    """The runs whose claims keep pending batches for an operator."""
    return {
        owner.removeprefix(ISOLATE_PREFIX)
        for tenant in staging.tenants_with_pending()
        for owner in staging.claims(tenant).values()
    }


def delete_run(instance: DagsterInstance, run_id: str) -> None:
    """The run, its event log, its asset check executions and its captured stdout/stderr.
    Dagster's delete_run leaves the check executions (~30 rows a run here) and, on SQLite,
    the run's event log file, emptied: both are removed here."""
    instance.delete_run(run_id)
    storage = instance.event_log_storage
    if isinstance(storage, SqlEventLogStorage):
        checks = AssetCheckExecutionsTable
        with storage.index_connection() as conn:
            conn.execute(checks.delete().where(checks.c.run_id == run_id))
    if isinstance(storage, SqliteEventLogStorage):
        for suffix in ("", "-wal", "-shm"):
            Path(storage.path_for_shard(run_id) + suffix).unlink(missing_ok=True)
    with suppress(Exception):  # captured logs are a convenience; a failure is not the run's
        instance.compute_log_manager.delete_logs(prefix=[run_id])


def delete_old_runs(instance: DagsterInstance, before: float, keep: set[str]) -> list[str]:
    """Delete the runs that ended before `before` but those in `keep`, oldest first, a batch
    at a time, at most MAX_BATCHES of them (a backlog goes over the next passes)."""
    deleted: list[str] = []
    for _ in range(MAX_BATCHES):
        runs = ended_runs(instance, before, limit=RUNS_PER_BATCH + len(keep))
        doomed = runs_to_delete(runs, before, keep)[:RUNS_PER_BATCH]
        for run_id in doomed:
            delete_run(instance, run_id)
        deleted += doomed
        if len(doomed) < RUNS_PER_BATCH:
            break
    return deleted


def apply_retention(
    instance: DagsterInstance, settings: Settings, now: float
) -> tuple[list[str], int]:
    """Delete what LILY_RUN_RETENTION_DAYS lets go; the runs deleted and the number of
    files removed (intermediate files, applied batches)."""
    before = cutoff(now, settings.run_retention_days)
    keep = latest_materialisation_runs(instance) | claim_holders(StagingArea(settings.staging_dir))
    deleted = delete_old_runs(instance, before, keep)
    files = io_files(settings.io_dir)
    writers = runs_by_id(instance, {path.parent.name for path in files})
    stale = io_files_to_delete(files, writers, before, set(deleted))
    removed = remove_files(stale, settings.io_dir)
    # Their folders stay: a tenant's staging folder is how `lily` commands know the tenant.
    removed += remove_files(applied_batch_files(settings.staging_dir, before))
    # The metrics' idempotency keys of batches that old: no run retries them any more.
    MetricsStore.from_settings(settings).forget_keys(now - before)
    return deleted, removed


@op(description="Deletes runs, event logs and intermediate files past the retention.")
def run_retention(context: OpExecutionContext, lily: LilyResource) -> None:
    settings = lily.settings()
    if settings.run_retention_days == 0:
        context.log.info("LILY_RUN_RETENTION_DAYS=0: retention is off, nothing deleted")
        return
    runs, files = apply_retention(context.instance, settings, time.time())
    context.log.info(
        f"deleted {len(runs)} runs that ended over {settings.run_retention_days} days ago "
        f"(with their event logs) and {files} files no run needs (intermediate frames, "
        "applied batches)"
    )


@job(
    executor_def=in_process_executor,
    description="Run retention: runs (with their event logs) that ended more than "
    "LILY_RUN_RETENTION_DAYS ago, but those holding an asset partition's latest "
    "materialisation or a pending batch's claim, and intermediate files no run needs.",
    tags={"lily/source": "maintenance"},
)
def run_retention_job() -> None:
    run_retention()


@schedule(
    job=run_retention_job,
    cron_schedule="17 * * * *",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Hourly run retention (LILY_RUN_RETENTION_DAYS, default 7; 0: off).",
)
def run_retention_schedule(context: ScheduleEvaluationContext) -> Any:
    days = Settings.from_env().run_retention_days
    if days == 0:
        return SkipReason("LILY_RUN_RETENTION_DAYS=0: retention is off")
    return {}
