"""A batch an operator releases (`lily batches release`) is taken by the next run: the
sensors' sweep requests a run for it, under a run key no earlier run had."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus

from lily_dagster.defs.ingest.sensors import sweep_run_requests
from lily_dagster.defs.partitions import TENANTS
from lily_dagster.lib.staging import LANDED_SCHEMA, StagingArea, release_batch


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(TENANTS, ["acme"])
        yield instance


def test_a_released_batch_gets_a_sweep_run(instance: DagsterInstance, tmp_path: Path) -> None:
    staging = StagingArea(tmp_path / "staging")
    staging.land("acme", "b1", "kafka", pl.DataFrame(schema=LANDED_SCHEMA), {})
    landed_long_ago = time.time() - 3600
    os.utime(tmp_path / "staging" / "acme" / "pending" / "b1.json", (landed_long_ago,) * 2)
    # Held by a run that has not died (a run that failed in a step holds it the same way).
    instance.add_run(
        DagsterRun(job_name="tenant_ingest_job", run_id="held", status=DagsterRunStatus.STARTED)
    )
    staging.claim("acme", ["b1"], "held")
    assert sweep_run_requests(instance, staging, runs={}, exclude=set()) == []

    release_batch(staging, "acme", "b1")
    (request,) = sweep_run_requests(instance, staging, runs={}, exclude=set())
    assert request.partition_key == "acme"
    assert request.run_config["ops"]["landed_events"]["config"]["batch_ids"] == ["b1"]
    assert request.run_key is not None and request.run_key.endswith(":acme:r1")
    assert request.tags["lily/recovered_from"] == "held"
