"""What `lily run --until-idle` counts as still to do: pending batches a sensor would still
request a run for (targets behind their change log: test_cli's end-to-end test); and what a
new daemon owner and the sweep do about runs a crash left behind."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from lily_dagster.lib.staging import StagingArea, landed_frame
from lily_dagster.runtime import (
    batches_awaiting_a_run,
    fail_runs_of_a_stopped_stack,
    prepare_dagster_home,
)
from lily_dagster.settings import Settings


def land(staging: StagingArea, tenant: str, batch_id: str) -> None:
    frame = landed_frame(["kafka:t:0:1"], [b"{}"], [datetime.now(UTC)])
    staging.land(tenant, batch_id, "kafka", frame, {})


def test_unclaimed_and_isolated_batches_await_a_run_those_of_a_failed_run_do_not(
    tmp_path: Path,
) -> None:
    staging = StagingArea(tmp_path / "staging")
    assert batches_awaiting_a_run(staging) == 0
    land(staging, "acme", "b1")  # no run took it: a sweep follows
    land(staging, "acme", "b2")
    land(staging, "globex", "b3")
    assert batches_awaiting_a_run(staging) == 3
    staging.claim("acme", ["b1"], "run-that-failed")  # waits for an operator
    staging.isolate("globex", ["b3"], "multi-tenant-run")  # a run of globex alone follows
    assert batches_awaiting_a_run(staging) == 2
    staging.mark_applied("acme", ["b2"])
    staging.claim("globex", ["b3"], "its-own-run-that-failed")
    assert batches_awaiting_a_run(staging) == 0


def test_a_new_daemon_owner_fails_the_runs_a_stopped_stack_left_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs left STARTING or STARTED by a killed stack are failed, with the reason, before the
    next daemon starts (a run killed while starting has no worker pid to check); ended and
    not started runs are left alone."""
    from dagster import DagsterInstance, DagsterRun, DagsterRunStatus

    monkeypatch.setenv("LILY_HOME", str(tmp_path / "home"))
    settings = Settings.from_env()
    prepare_dagster_home(settings)
    statuses = [
        DagsterRunStatus.STARTING,
        DagsterRunStatus.STARTED,
        DagsterRunStatus.NOT_STARTED,
        DagsterRunStatus.SUCCESS,
    ]
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        runs = [instance.add_run(DagsterRun(job_name="j", status=s)) for s in statuses]
    failed = fail_runs_of_a_stopped_stack(settings)
    assert sorted(failed) == sorted(r.run_id for r in runs[:2])
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        after = [instance.get_run_by_id(r.run_id) for r in runs]
        assert [r.status for r in after if r is not None] == [
            DagsterRunStatus.FAILURE,
            DagsterRunStatus.FAILURE,
            DagsterRunStatus.NOT_STARTED,
            DagsterRunStatus.SUCCESS,
        ]
        reasons = instance.all_logs(runs[0].run_id)
        assert any("stack that launched this run stopped" in (e.message or "") for e in reasons)
    assert fail_runs_of_a_stopped_stack(settings) == []  # nothing left to fail


def test_a_sweep_or_isolate_run_is_tried_again_only_when_its_run_died() -> None:
    """Dagster runs a run key once: a sweep whose run died before claiming its batches (no
    release to change its key) gets a new attempt's key, not a request Dagster skips; a run
    in flight or failed in a step keeps the key (Dagster skips the request: no retry loop)."""
    from dagster import DagsterRun, DagsterRunStatus, instance_for_test
    from dagster._core.storage.tags import RUN_KEY_TAG

    from lily_dagster.defs.ingest.sensors import attempt_run_key

    with instance_for_test() as instance:
        assert attempt_run_key(instance, "sweep-x:acme") == "sweep-x:acme"
        first = instance.add_run(DagsterRun(job_name="j", tags={RUN_KEY_TAG: "sweep-x:acme"}))
        assert attempt_run_key(instance, "sweep-x:acme") == "sweep-x:acme"  # not ended yet
        instance.report_run_failed(first, "run worker process 1 is gone")  # died
        assert attempt_run_key(instance, "sweep-x:acme") == "sweep-x:acme:a1"
        second = DagsterRun(job_name="j", tags={RUN_KEY_TAG: "sweep-x:acme:a1"})
        instance.add_run(second.with_status(DagsterRunStatus.SUCCESS))
        assert attempt_run_key(instance, "sweep-x:acme") == "sweep-x:acme:a1"  # done
        assert attempt_run_key(instance, "sweep-y:acme") == "sweep-y:acme"
