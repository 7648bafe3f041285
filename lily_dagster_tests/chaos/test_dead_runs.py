"""A run whose process dies mid-way (kill -9 of the run worker inside a step): run
monitoring marks it failed, its batches go to the next run of each tenant, and the hub ends
exactly as the contract says, nothing lost and nothing applied twice. (Kills of the whole
stack at every point of a run: test_kill_points.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lily_dagster.launcher import process_alive
from lily_dagster.lib.broker import produce
from lily_dagster.lib.demo import generate_demo
from lily_dagster_tests.chaos.outcome import LILY, assert_exact
from lily_dagster_tests.support.chaos import chaos_pause_config


def test_a_killed_run_worker_is_failed_and_its_batches_reach_the_hub(
    lily_home: Path, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    pause = tmp_path / "pause"
    os.environ["LILY_CONFIG"] = str(chaos_pause_config(tmp_path / "lily.yaml", pause))
    try:
        traffic = generate_demo(
            tenants=("acme", "globex"), tables_per_tenant=2, columns_per_table=2, seed=5
        )
        produce(kafka_bootstrap, topic, traffic.messages)
        run = subprocess.Popen(
            [*LILY, "run", "--until-idle", "--timeout", "240"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 120
            while not (pause / "reached").exists():
                assert run.poll() is None, run.communicate()[1][-3000:]
                assert time.monotonic() < deadline, "no run reached the hooks within 120 s"
                time.sleep(0.2)
            worker = int((pause / "reached").read_text())
            os.kill(worker, signal.SIGKILL)
            killed_at = time.monotonic()
            out, err = run.communicate(timeout=240)
        finally:
            if run.poll() is None:
                run.kill()
        recovered_s = time.monotonic() - killed_at
        summary = json.loads(out)
        # The dead run is counted as failed (exit 1), and the sweep's runs applied its batches.
        assert run.returncode == 1, err[-3000:]
        assert summary["runs"]["failure"] == 1 and summary["runs"]["success"] >= 1
        for tenant in ("acme", "globex"):
            assert summary["tenants"][tenant]["pending_batches"] == 0
        assert_exact(traffic, ("acme", "globex"))
        assert recovered_s < 120
    finally:
        del os.environ["LILY_CONFIG"]


@pytest.mark.parametrize("owner_status", ["died", "failed_in_a_step", "gone"])
def test_only_batches_of_runs_that_died_are_released(owner_status: str, tmp_path: Path) -> None:
    from dagster import DagsterRunStatus, instance_for_test, job, op

    from lily_dagster.defs.ingest.recovery import release_dead_runs_batches
    from lily_dagster.lib.staging import MAX_RELEASES, StagingArea, landed_frame

    @op
    def step() -> None:
        raise RuntimeError("a blocking check failed")

    @job
    def ingest() -> None:
        step()

    staging = StagingArea(tmp_path / "staging")
    frame = landed_frame(["kafka:t/0/1"], [b"{}"], [datetime.now(UTC)])
    staging.land("acme", "b1", "kafka", frame, {})
    with instance_for_test() as instance:
        if owner_status == "failed_in_a_step":
            run_id = ingest.execute_in_process(instance=instance, raise_on_error=False).run_id
        else:  # as run monitoring leaves a run whose process died: failed, no step failed
            run = instance.create_run_for_job(ingest)
            instance.report_run_failed(run, "run worker process 123 is gone")
            run_id = run.run_id
            if owner_status == "gone":
                instance.delete_run(run_id)
        assert owner_status == "gone" or (
            instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE  # type: ignore[union-attr]
        )
        staging.claim("acme", ["b1"], run_id)
        released = release_dead_runs_batches(instance, staging, ["acme"])
        if owner_status == "failed_in_a_step":
            assert released == {}  # waits for an operator, as before
            assert staging.claimed_by("acme", "b1") == run_id
            return
        assert released == {"acme": ["b1"]}
        assert staging.unclaimed("acme") == ["b1"]
        # A batch whose runs keep dying waits for an operator after MAX_RELEASES.
        for _ in range(MAX_RELEASES - 1):
            staging.claim("acme", ["b1"], run_id)
            assert release_dead_runs_batches(instance, staging, ["acme"]) == {"acme": ["b1"]}
        staging.claim("acme", ["b1"], run_id)
        assert release_dead_runs_batches(instance, staging, ["acme"]) == {}
        assert staging.claimed_by("acme", "b1") == run_id
        assert staging.releases("acme", "b1") == [run_id] * MAX_RELEASES


def test_process_alive_tells_a_live_process_from_a_gone_or_reused_pid() -> None:
    assert process_alive(os.getpid())
    child = subprocess.Popen(["true"])
    child.wait()
    assert not process_alive(child.pid)
    # A process that started after the pid was reported is another process reusing it.
    assert not process_alive(os.getpid(), not_started_after=0.0)
