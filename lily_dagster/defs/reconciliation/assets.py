"""reconciliation: each tenant's hub made equal to its source snapshot, nightly.

Thin wiring over `lily_dagster.lib.reconciliation.reconcile`: the snapshot passes the live
path's gates, its diff against the hub's listing is applied with the fail-safes (no archive
when the snapshot failed its checks or would archive more than `max_archive_share` of the
live records in scope), and the diff is shown as markdown metadata.
"""

from datetime import UTC, datetime

from dagster import (
    AssetExecutionContext,
    AssetSelection,
    Config,
    DefaultScheduleStatus,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    asset,
    define_asset_job,
    in_process_executor,
    schedule,
)

from lily_dagster.defs.partitions import TENANTS, tenant_partitions
from lily_dagster.defs.resources import LilyResource
from lily_dagster.lib.reconciliation import reconcile, reconciled_tenants


class ReconciliationRunConfig(Config):
    """`dry_run` overrides the tenant's `reconciliation.dry_run` for this run."""

    dry_run: bool | None = None


@asset(
    partitions_def=tenant_partitions,
    group_name="reconciliation",
    description="The tenant's hub reconciled with its source snapshot (LILY_CONFIG "
    "`reconciliation`): missing and changed records upserted, stale ones archived unless a "
    "fail-safe refuses; the diff is in the metadata.",
    kinds={"polars"},
    # A hub writer like hub_records: it shares the hub's API budget.
    pool="lily_hub",
)
def reconciliation(
    context: AssetExecutionContext, config: ReconciliationRunConfig, lily: LilyResource
) -> MaterializeResult:
    tenant = context.partition_key
    hub = lily.hub()
    report = reconcile(tenant, lily.settings(), hub, lily.quarantine(), config.dry_run)
    plan, counts, applied = report.plan, report.diff.counts, report.applied
    if plan.archive_refused:
        context.log.warning(f"{tenant}: archiving refused: {plan.refusal_reason}")
    if report.quarantined:
        context.log.warning(f"{report.quarantined} snapshot rows of {tenant} quarantined")
    status = hub.status_counts(tenant)
    return MaterializeResult(
        metadata={
            "summary": MetadataValue.md(report.markdown),
            "dry_run": plan.dry_run,
            "archive_refused": plan.archive_refused,
            "archive_refused_reason": MetadataValue.text(plan.refusal_reason or "none"),
            "snapshot_id": MetadataValue.text(report.snapshot.snapshot_id),
            "snapshot_files": report.snapshot.files,
            "snapshot_rows": report.snapshot.rows,
            "snapshot_records": report.diff.snapshot_records,
            "rejected": report.rejects.height,
            "rejected_by_reason": MetadataValue.json(report.rejected_by_reason),
            "quarantined": report.quarantined,
            "partial_changes_skipped": report.partial_changes,
            **counts,
            "live_in_scope": report.diff.live_in_scope,
            "stale_share": round(plan.stale_share, 4),
            "max_archive_share": plan.max_archive_share,
            **{f"records_{k}": v for k, v in (applied.as_dict() if applied else {}).items()},
            "hub_active": status.get("ACTIVE", 0),
            "hub_deleted": status.get("DELETED", 0),
        }
    )


reconciliation_job = define_asset_job(
    "reconciliation_job",
    selection=AssetSelection.assets(reconciliation),
    executor_def=in_process_executor,
    description="Reconciles one tenant's hub with its source snapshot (config `dry_run`).",
)


@schedule(
    name="nightly_reconciliation",
    job=reconciliation_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Every night at 02:00 UTC, one reconciliation run per tenant that configures "
    "`reconciliation` in LILY_CONFIG.",
)
def nightly_reconciliation(
    context: ScheduleEvaluationContext, lily: LilyResource
) -> list[RunRequest] | SkipReason:
    # Cheap on purpose: the YAML file only; no snapshot is read and no hub is opened here.
    tenants = reconciled_tenants(lily.settings().config)
    if not tenants:
        return SkipReason("no tenant configures `reconciliation` in LILY_CONFIG")
    # A configured tenant is reconciled even before its first live event made its partition.
    new = sorted(set(tenants) - set(context.instance.get_dynamic_partitions(TENANTS)))
    if new:
        context.instance.add_dynamic_partitions(TENANTS, new)
    day = (context.scheduled_execution_time or datetime.now(UTC)).strftime("%Y-%m-%d")
    return [
        RunRequest(
            run_key=f"reconciliation:{tenant}:{day}",
            partition_key=tenant,
            tags={"lily/tenant": tenant, "lily/source": "reconciliation"},
        )
        for tenant in tenants
    ]
