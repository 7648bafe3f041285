"""propagation_<target>: each configured target fed with its tenant's hub changes.

One asset per target in LILY_CONFIG (`targets:`), downstream of hub_records and
partitioned by tenant; `propagation_sensor` requests a run for a tenant whenever its change
log is ahead of one of its targets (new changes, or a target that was down), so delivery
needs no diffing and resumes by itself. Dead-lettered changes are replayed with
`dlq_replay_job` (or `lily dlq replay`).
"""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    AssetsDefinition,
    AssetSelection,
    Config,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    Failure,
    JobDefinition,
    MaterializeResult,
    OpExecutionContext,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    asset,
    define_asset_job,
    in_process_executor,
    job,
    op,
    sensor,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from lily_dagster.defs.ingest.recovery import died
from lily_dagster.defs.partitions import TENANTS, tenant_partitions
from lily_dagster.defs.resources import LilyResource
from lily_dagster.lib.access.decision import Action
from lily_dagster.lib.audit import operator_action, run_subject
from lily_dagster.lib.logs import log_stage
from lily_dagster.lib.metrics.updates import propagation
from lily_dagster.lib.propagation import (
    DispatchResult,
    Position,
    configure_target,
    position_path,
    read_change_head,
)
from lily_dagster.settings import ConfigError, Settings, TargetConfig

GROUP = "propagation"
TENANT_TAG = "lily/propagation"


def asset_name(target: TargetConfig) -> str:
    return "propagation_" + target.name.replace("-", "_")


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def propagation_asset(target: TargetConfig) -> AssetsDefinition:
    @asset(
        name=asset_name(target),
        partitions_def=tenant_partitions,
        group_name=GROUP,
        deps=[AssetKey("hub_records")],
        kinds={target.type},
        description=f"Hub changes delivered to the {target.type} target {target.name!r}, "
        "exactly those since its last delivery; refused ones dead-lettered.",
        # One delivery at a time per target keeps its receiver's view in order.
        pool=f"lily_target_{target.name}",
    )
    def _propagation(context: AssetExecutionContext, lily: LilyResource) -> MaterializeResult:
        tenant = context.partition_key
        settings = lily.settings()
        if target.tenants is not None and tenant not in target.tenants:
            return MaterializeResult(metadata={"configured_for_tenant": False})
        configured = configure_target(settings.config, tenant, target.name)
        propagator = lily.propagator()
        result: DispatchResult = propagator.dispatch(tenant, configured)
        behind, dead = propagator.backlog(tenant, target.name)
        lily.metrics().try_record(propagation(tenant, target.name, behind, dead))
        log_stage(
            "delivered", tenant, run_id=context.run_id, target=target.name,
            delivered=result.delivered, dead_lettered=result.dead_lettered, at=result.position,
        )  # fmt: skip
        metadata = {
            "delivered": result.delivered,
            "withheld_by_access_rules": result.withheld,
            "dead_lettered": result.dead_lettered,
            "batches": result.batches,
            "attempts": result.attempts,
            "position": result.position,
            "behind": behind,
            "delay_p50_s": _percentile(result.delays_s, 0.5),
            "delay_p95_s": _percentile(result.delays_s, 0.95),
        }
        if result.error:
            # The position stays: the sensor asks again and the next run resumes here.
            raise Failure(description=result.error, metadata=metadata)
        if result.dead_lettered:
            context.log.warning(
                f"{result.dead_lettered} changes of {tenant} dead-lettered for {target.name}"
            )
        return MaterializeResult(metadata=metadata)

    return _propagation


def build_propagation(settings: Settings) -> dict[str, list[Any]]:
    """Assets, jobs and sensors for the targets in LILY_CONFIG (none without targets)."""
    targets = settings.config.targets
    if not targets:
        return {"assets": [], "jobs": [], "sensors": []}
    assets = [propagation_asset(t) for t in targets]
    propagation_job = define_asset_job(
        "propagation_job",
        selection=AssetSelection.groups(GROUP),
        executor_def=in_process_executor,
        description="Delivers one tenant's new hub changes to its targets.",
    )
    return {
        "assets": assets,
        "jobs": [propagation_job, dlq_replay_job_def()],
        "sensors": [propagation_sensor_for(propagation_job, targets)],
    }


def propagation_sensor_for(
    propagation_job: UnresolvedAssetJobDefinition, targets: list[TargetConfig]
) -> SensorDefinition:
    @sensor(
        name="propagation_sensor",
        job=propagation_job,
        minimum_interval_seconds=5,
        default_status=DefaultSensorStatus.RUNNING,
        description="A run per tenant whose change log is ahead of one of its targets.",
    )
    def propagation_sensor(
        context: SensorEvaluationContext, lily: LilyResource
    ) -> list[RunRequest] | SkipReason:
        # Cheap: run metadata and small position files only; no hub database is opened.
        settings = lily.settings()
        propagator_root = settings.propagation_dir
        busy = {
            r.tags.get(TENANT_TAG)
            for r in context.instance.get_runs(
                RunsFilter(
                    job_name="propagation_job",
                    statuses=[
                        DagsterRunStatus.QUEUED,
                        DagsterRunStatus.NOT_STARTED,
                        DagsterRunStatus.STARTING,
                        DagsterRunStatus.STARTED,
                    ],
                )
            )
        }
        requests = []
        for tenant in context.instance.get_dynamic_partitions(TENANTS):
            if tenant in busy or tenant.startswith("_"):
                continue
            if _failed_recently(context, tenant, settings.propagation_retry_s):
                continue  # a target is down: no retry storm, try again after the pause
            # The latest materialisation's head, or the one noted as batches were applied
            # by a run that died before materialising.
            latest = max(_latest_change(context, tenant), read_change_head(propagator_root, tenant))
            behind = [
                t.name
                for t in settings.config.targets_of(tenant)
                if _delivered(propagator_root, tenant, t.name) < latest
            ]
            if behind:
                requests.append(
                    RunRequest(
                        partition_key=tenant,
                        tags={TENANT_TAG: tenant, "lily/tenant": tenant},
                        run_key=f"{tenant}:{latest}:{datetime.now(UTC).timestamp():.0f}",
                    )
                )
        return requests or SkipReason("every target is up to date")

    return propagation_sensor


def target_failure_ended_at(instance: DagsterInstance, tenant: str) -> float | None:
    """When the tenant's latest propagation run ended, if it failed in a step (a target
    down or refusing); else None. A run that died (killed, crashed, its stack stopped) says
    nothing about the targets: its changes go out with the next run, without a pause."""
    runs = instance.get_runs(
        RunsFilter(job_name="propagation_job", tags={TENANT_TAG: tenant}), limit=1
    )
    if not runs or runs[0].status != DagsterRunStatus.FAILURE or died(instance, runs[0].run_id):
        return None
    record = instance.get_run_record_by_id(runs[0].run_id)
    return record.end_time if record is not None else None


def _failed_recently(context: SensorEvaluationContext, tenant: str, pause_s: int) -> bool:
    ended = target_failure_ended_at(context.instance, tenant)
    return ended is not None and datetime.now(UTC).timestamp() - ended < pause_s


def _latest_change(context: SensorEvaluationContext, tenant: str) -> int:
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("hub_records"), asset_partitions=[tenant]),
        limit=1,
    ).records
    if not records or records[0].asset_materialization is None:
        return 0
    value = records[0].asset_materialization.metadata.get("change_seq")
    return int(value.value) if value is not None else 0  # type: ignore[arg-type]


def _delivered(root: Path, tenant: str, target: str) -> int:
    return Position.load(position_path(root, tenant, target)).delivered


class DlqReplayConfig(Config):
    target: str


@op
def replay_dead_letters(
    context: OpExecutionContext, config: DlqReplayConfig, lily: LilyResource
) -> None:
    tenant = context.partition_key
    with operator_action(
        lily.settings(),
        tenant,
        Action.DLQ_REPLAY,
        f"dlq/{config.target}@run:{context.run_id}",
        sub=run_subject(context.run.tags),
    ):
        _replay_dead_letters(context, config, lily, tenant)


def _replay_dead_letters(
    context: OpExecutionContext, config: DlqReplayConfig, lily: LilyResource, tenant: str
) -> None:
    try:
        target = configure_target(lily.settings().config, tenant, config.target)
    except ConfigError as exc:
        raise Failure(str(exc)) from None
    propagator = lily.propagator()
    result = propagator.replay_dlq(tenant, target)
    lily.metrics().try_record(
        propagation(tenant, target.name, *propagator.backlog(tenant, target.name))
    )
    context.log.info(
        f"replayed to {config.target}: {result.delivered} delivered, "
        f"{result.dead_lettered} dead-lettered again"
    )
    if result.error:
        raise Failure(description=result.error)


def dlq_replay_job_def() -> JobDefinition:
    """Built with the targets, not at import: a module-level job would be found by the defs
    folder's autoloading even without targets."""

    @job(
        name="dlq_replay_job",
        partitions_def=tenant_partitions,
        executor_def=in_process_executor,
        description="Sends one tenant's dead-lettered changes of a target again (config target).",
    )
    def dlq_replay_job() -> None:
        replay_dead_letters()

    return dlq_replay_job
