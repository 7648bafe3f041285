"""Batches held by dead runs go back to the sweep.

A run claims the pending batches it takes. When it fails because a step failed (a blocking
check, a hub that stayed down), its batches wait for an operator. When it ended without
any step failing — its process was killed or crashed and run monitoring marked it failed
(launcher.py), or an operator stopped or marked it failed — nothing about the batches is
wrong: their claims are released and the next tick's sweep gives them a run.
"""

from collections.abc import Iterable

from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.storage.tags import ROOT_RUN_ID_TAG

from lily_dagster.lib.staging import ISOLATE_PREFIX, MAX_RELEASES, StagingArea

ENDED = (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
# A run that has not ended: queued, starting, running or being cancelled.
IN_FLIGHT = (
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
)


def died(instance: DagsterInstance, run_id: str) -> bool:
    """Whether the run ended without a step failing (or is gone from Dagster's storage)."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        return True
    if run.status not in ENDED:
        return False
    failed_steps = instance.get_records_for_run(
        run_id, of_type=DagsterEventType.STEP_FAILURE, limit=1
    ).records
    return not failed_steps


def held_by_dead_runs(
    instance: DagsterInstance, staging: StagingArea, tenant: str
) -> dict[str, str]:
    """Pending batch id → dead run holding it, for the batches that may still be released."""
    verdicts: dict[str, bool] = {}
    held: dict[str, str] = {}
    for batch_id, owner in staging.claims(tenant).items():
        if owner.startswith(ISOLATE_PREFIX):
            continue
        if len(staging.releases(tenant, batch_id)) >= MAX_RELEASES:
            continue
        if owner not in verdicts:
            verdicts[owner] = died(instance, owner)
        if verdicts[owner]:
            held[batch_id] = owner
    return held


def release_dead_runs_batches(
    instance: DagsterInstance, staging: StagingArea, tenants: Iterable[str]
) -> dict[str, list[str]]:
    """Release the batches of `tenants` that dead runs hold; tenant → batch ids released."""
    released: dict[str, list[str]] = {}
    for tenant in tenants:
        for batch_id, owner in held_by_dead_runs(instance, staging, tenant).items():
            if staging.release(tenant, batch_id, owner):
                released.setdefault(tenant, []).append(batch_id)
    return released


def run_in_flight(instance: DagsterInstance, run_id: str) -> bool:
    """Whether the run, or a re-execution of it, has not ended. A batch's claim names the
    root run of a re-execution chain: a re-execution in flight takes the batch again."""
    statuses = list(IN_FLIGHT)
    return bool(
        instance.get_runs_count(RunsFilter(run_ids=[run_id], statuses=statuses))
        or instance.get_runs_count(RunsFilter(tags={ROOT_RUN_ID_TAG: run_id}, statuses=statuses))
    )
