"""What `lily run --until-idle` counts as still to do: pending batches a sensor would still
request a run for (targets behind their change log: test_cli's end-to-end test)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from lily_dagster.lib.staging import StagingArea, landed_frame
from lily_dagster.runtime import batches_awaiting_a_run


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
