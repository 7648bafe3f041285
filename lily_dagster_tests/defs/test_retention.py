"""The run retention job against a real (SQLite) Dagster instance: old runs go with their
event log files, but never the latest materialisation of an asset partition, a run that
holds a pending batch, or a run in flight."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetKey,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    Definitions,
    Failure,
    StaticPartitionsDefinition,
    asset,
    asset_check,
    build_schedule_context,
    define_asset_job,
    job,
    op,
)

from lily_dagster.defs.maintenance import retention
from lily_dagster.defs.maintenance.retention import (
    apply_retention,
    run_retention_job,
    run_retention_schedule,
)
from lily_dagster.defs.resources import LilyResource
from lily_dagster.lib.staging import LANDED_SCHEMA, StagingArea
from lily_dagster.settings import Settings

DAY = 86_400
parts = StaticPartitionsDefinition(["acme", "globex"])


@asset(partitions_def=parts)
def thing() -> int:
    return 1


@asset_check(asset=thing)
def thing_is_fine() -> AssetCheckResult:
    return AssetCheckResult(passed=True)


@op
def breaks() -> None:
    raise Failure("the hub stayed down")


@job
def failing_job() -> None:
    breaks()


defs = Definitions(
    assets=[thing],
    asset_checks=[thing_is_fine],
    jobs=[define_asset_job("things", [thing]), failing_job],
)


def materialise(instance: DagsterInstance, partition: str) -> str:
    result = defs.resolve_job_def("things").execute_in_process(
        instance=instance, partition_key=partition
    )
    return result.run_id


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[DagsterInstance]:
    (tmp_path / "dagster").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "dagster")) as instance:
        yield instance


def test_old_runs_go_but_what_is_still_read_stays(
    instance: DagsterInstance, lily_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "RUNS_PER_BATCH", 1)  # a batch per run: the loop is tried
    settings = Settings.from_env()
    superseded = materialise(instance, "acme")
    latest_acme = materialise(instance, "acme")
    latest_globex = materialise(instance, "globex")
    failed = failing_job.execute_in_process(instance=instance, raise_on_error=False).run_id
    holder = failing_job.execute_in_process(instance=instance, raise_on_error=False).run_id
    staging = StagingArea(settings.staging_dir)
    staging.land("acme", "b1", "kafka", pl.DataFrame(schema=LANDED_SCHEMA), {})
    staging.claim("acme", ["b1"], holder)  # failed in a step: the batch waits for an operator
    staging.land("acme", "b2", "kafka", pl.DataFrame(schema=LANDED_SCHEMA), {})
    staging.mark_applied("acme", ["b2"])
    running = DagsterRun(job_name="things", run_id="r-running", status=DagsterRunStatus.STARTED)
    instance.add_run(running)
    for run_id in (superseded, failed, latest_acme, holder):
        (settings.io_dir / "landed_events" / run_id).mkdir(parents=True)
        (settings.io_dir / "landed_events" / run_id / "acme.parquet").write_bytes(b"PAR1")
    shard = Path(instance.event_log_storage.path_for_shard(superseded))  # type: ignore[attr-defined]
    assert shard.exists()

    # No run ended 7 days ago yet; the successful runs' files are needed by none.
    assert apply_retention(instance, settings, time.time()) == ([], 2)

    deleted, files = apply_retention(instance, settings, time.time() + 8 * DAY)
    assert sorted(deleted) == sorted([superseded, failed])
    assert files == 3  # the deleted failed run's, the applied batch's manifest and data
    assert staging.pending("acme") == ["b1"] and staging.claimed_by("acme", "b1") == holder
    assert (settings.staging_dir / "acme" / "applied").is_dir()
    assert not list((settings.staging_dir / "acme" / "applied").iterdir())
    assert not shard.exists()
    left = {r.run_id for r in instance.get_runs()}
    assert left == {latest_acme, latest_globex, holder, "r-running"}
    assert (settings.io_dir / "landed_events" / holder / "acme.parquet").exists()
    materialised = instance.fetch_materializations(AssetKey("thing"), limit=10).records
    assert {r.run_id for r in materialised} == {latest_acme, latest_globex}
    check = AssetCheckKey(AssetKey("thing"), "thing_is_fine")
    checked = instance.event_log_storage.get_asset_check_execution_history(check, limit=10)
    assert {c.run_id for c in checked} == {latest_acme, latest_globex}


def test_the_job_reports_and_retention_zero_is_off(
    instance: DagsterInstance, lily_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = materialise(instance, "acme")
    materialise(instance, "acme")
    result = run_retention_job.execute_in_process(
        instance=instance, resources={"lily": LilyResource(home=str(lily_home))}
    )
    assert result.success
    assert instance.get_run_by_id(old) is not None  # ended moments ago
    assert run_retention_schedule(build_schedule_context(instance=instance)) == {}
    monkeypatch.setenv("LILY_RUN_RETENTION_DAYS", "0")
    skip = run_retention_schedule(build_schedule_context(instance=instance))
    assert "retention is off" in str(skip)
    result = run_retention_job.execute_in_process(
        instance=instance, resources={"lily": LilyResource(home=str(lily_home))}
    )
    assert result.success
