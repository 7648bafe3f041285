"""Drive a sensor and the runs it requests on a real Dagster instance, as the daemon would."""

from __future__ import annotations

from typing import Any

from dagster import (
    DagsterInstance,
    DagsterRun,
    RunRequest,
    SensorDefinition,
    SensorResult,
    SkipReason,
    build_sensor_context,
)

from lily_dagster.definitions import defs as load_definitions
from lily_dagster.defs.resources import KafkaResource, LilyResource

defs = load_definitions()

JOB = defs.resolve_job_def("tenant_ingest_job")


def tick(
    sensor: SensorDefinition, instance: DagsterInstance, cursor: str | None
) -> SensorResult | SkipReason:
    context = build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"kafka": KafkaResource(), "lily": LilyResource()},
    )
    result: Any = sensor(context)
    assert isinstance(result, SensorResult | SkipReason), result
    return result


def execute(instance: DagsterInstance, request: RunRequest) -> None:
    outcome = JOB.execute_in_process(
        run_config=request.run_config,
        partition_key=request.partition_key,
        instance=instance,
        tags=request.tags,
    )
    assert outcome.success


def create(instance: DagsterInstance, request: RunRequest) -> DagsterRun:
    """The run created as the daemon creates it (its planned events too), not executed."""
    tags = dict(request.tags)
    if request.partition_key:
        tags["dagster/partition"] = request.partition_key
    return instance.create_run_for_job(JOB, run_config=request.run_config, tags=tags)


def tenants_of(request: RunRequest) -> list[str]:
    """The tenants a run request of the ingest job processes (one, or a multi-tenant run's)."""
    if request.tags.get("lily/tenants"):
        return request.tags["lily/tenants"].split(",")
    return [request.partition_key] if request.partition_key else []


def run_requested(instance: DagsterInstance, result: SensorResult) -> list[RunRequest]:
    """Add the tick's new partitions, then execute each run it requested."""
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(
            request.partitions_def_name, list(request.partition_keys or [])
        )
    runs: list[RunRequest] = []
    for request in result.run_requests or []:
        assert isinstance(request, RunRequest)
        execute(instance, request)
        runs.append(request)
    return runs


def drain(
    sensor: SensorDefinition, instance: DagsterInstance, cursor: str | None, max_ticks: int = 50
) -> tuple[str | None, list[RunRequest]]:
    """Tick and run until a tick requests nothing; returns the cursor and every run."""
    executed: list[RunRequest] = []
    for _ in range(max_ticks):
        result = tick(sensor, instance, cursor)
        if isinstance(result, SkipReason):
            return cursor, executed
        cursor = result.cursor or cursor
        runs = run_requested(instance, result)
        if not runs:
            return cursor, executed
        executed.extend(runs)
    raise AssertionError(f"{sensor.name} never drained")
