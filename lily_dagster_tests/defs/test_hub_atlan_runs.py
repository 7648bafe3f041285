"""hub_records writing to Atlan (the emulator, over HTTP) in real runs: results and guids
on the run's page; an Atlan that stays unavailable retries the step, then fails the run
with a clear message and loses nothing; a revoked key fails at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    RunRequest,
    SensorResult,
    instance_for_test,
)

from lily_dagster.defs.ingest.sensors import kafka_events_sensor
from lily_dagster.lib.broker import produce
from lily_dagster.lib.demo import generate_demo
from lily_dagster.lib.staging import StagingArea
from lily_dagster_tests import sensor_harness as harness
from lily_dagster_tests.conftest import AtlanEmulator


@pytest.fixture
def atlan_hub(atlan_emulator: AtlanEmulator, monkeypatch: pytest.MonkeyPatch) -> AtlanEmulator:
    monkeypatch.setenv("LILY_HUB", "atlan")
    monkeypatch.setenv("ATLAN_BASE_URL", atlan_emulator.base_url)
    monkeypatch.setenv("ATLAN_API_KEY", atlan_emulator.api_key)
    monkeypatch.setenv("LILY_ATLAN_RETRIES", "1")
    monkeypatch.setenv("LILY_ATLAN_BACKOFF_S", "0.01")
    monkeypatch.setenv("LILY_HUB_RETRIES", "2")
    monkeypatch.setenv("LILY_HUB_RETRY_WAIT_S", "0")
    return atlan_emulator


def landed_runs(instance: DagsterInstance, kafka_bootstrap: str, topic: str) -> list[RunRequest]:
    traffic = generate_demo(tenants=("acme",), tables_per_tenant=2, columns_per_table=2, seed=5)
    produce(kafka_bootstrap, topic, traffic.messages)
    result = harness.tick(kafka_events_sensor, instance, None)
    assert isinstance(result, SensorResult)
    for partitions in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(
            partitions.partitions_def_name, list(partitions.partition_keys or [])
        )
    requests = [r for r in result.run_requests or [] if isinstance(r, RunRequest)]
    return [r for r in requests if r.partition_key == "acme"]


def run(instance: DagsterInstance, request: RunRequest) -> Any:
    return harness.JOB.execute_in_process(
        run_config=request.run_config,
        partition_key=request.partition_key,
        instance=instance,
        tags=request.tags,
        raise_on_error=False,
    )


def test_unavailable_atlan_retries_the_step_then_fails_clearly_and_loses_nothing(
    lily_home: Path, kafka_bootstrap: str, topic: str, atlan_hub: AtlanEmulator
) -> None:
    with instance_for_test() as instance:
        (request,) = landed_runs(instance, kafka_bootstrap, topic)
        atlan_hub.fault(503, count=10_000, path_prefix="/api/meta/entity/bulk")
        failed = run(instance, request)
        assert not failed.success
        retries = [
            e for e in failed.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY
        ]
        assert len(retries) == 2  # LILY_HUB_RETRIES
        failure = next(
            e for e in failed.all_events if e.event_type == DagsterEventType.STEP_FAILURE
        )
        assert "Atlan answered 503" in str(failure.event_specific_data)
        assert StagingArea(lily_home / "staging").pending("acme")  # the batch is kept
        assert atlan_hub.entities() == []
        # Atlan is back: the same run request (as the sensor or an operator would retry it)
        # delivers everything once.
        atlan_hub.fault(None, count=0)
        assert run(instance, request).success
        names = [e["attributes"]["qualifiedName"] for e in atlan_hub.entities()]
        assert names and len(names) == len(set(names))
        mat = instance.fetch_materializations(AssetKey("hub_records"), limit=1).records[0]
        metadata = mat.asset_materialization.metadata  # type: ignore[union-attr]
        assert metadata["records_created"].value == len(names)
        assert "| created |" in str(metadata["hub_changes"].value)


def test_revoked_key_fails_the_run_at_once_without_retries(
    lily_home: Path, kafka_bootstrap: str, topic: str, atlan_hub: AtlanEmulator
) -> None:
    with instance_for_test() as instance:
        (request,) = landed_runs(instance, kafka_bootstrap, topic)
        atlan_hub.revoke_key()
        failed = run(instance, request)
        assert not failed.success
        kinds = [e.event_type for e in failed.all_events]
        assert DagsterEventType.STEP_UP_FOR_RETRY not in kinds
        failure = next(
            e for e in failed.all_events if e.event_type == DagsterEventType.STEP_FAILURE
        )
        assert "check ATLAN_API_KEY" in str(failure.event_specific_data)
        assert atlan_hub.entities() == []
