"""Scheduled checks on hub_records, each run by a job of its own (never planned in the
streaming runs, where every check costs events per run): hub_records_gx_suite (Great
Expectations on a sample of every tenant's hub, hourly) and hub_records_freshness (how long
since each tenant's hub last changed, every 15 minutes)."""

import json
from datetime import UTC, datetime

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetSelection,
    DefaultScheduleStatus,
    MetadataValue,
    ScheduleDefinition,
    asset_check,
    define_asset_job,
)

from lily_dagster.defs.hub.assets import hub_records
from lily_dagster.defs.partitions import TENANTS
from lily_dagster.defs.resources import LilyResource
from lily_dagster.lib.freshness import assess, describe


@asset_check(
    asset=hub_records,
    description="Great Expectations 1.x suite on a sample (10k) of each tenant's hub records: "
    "nulls, uniqueness, allowed statuses and type names, name lengths, live share.",
)
def hub_records_gx_suite(
    context: AssetCheckExecutionContext, lily: LilyResource
) -> AssetCheckResult:
    from lily_dagster.lib.gx_suite import run_hub_suite

    hub = lily.hub()
    per_tenant: dict[str, object] = {}
    failing: list[str] = []
    for tenant in sorted(context.instance.get_dynamic_partitions(TENANTS)):
        records = hub.records(tenant)
        if records.is_empty():
            continue
        result = run_hub_suite(records)
        per_tenant[tenant] = {
            "success": result.success,
            "rows_sampled": result.rows_sampled,
            "failed": result.failed(),
        }
        if not result.success:
            failing.append(tenant)
    return AssetCheckResult(
        passed=not failing,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "tenants_checked": len(per_tenant),
            "tenants_failing": MetadataValue.text(", ".join(failing) or "none"),
            "results": MetadataValue.json(json.loads(json.dumps(per_tenant, default=str))),
        },
    )


def scheduled_check(
    check: AssetChecksDefinition, job_name: str, schedule_name: str, cron: str, runs: str
) -> ScheduleDefinition:
    """The schedule (running by default) of a job running `check` alone (its `job`)."""
    job = define_asset_job(
        job_name, selection=AssetSelection.checks(check), description=f"Runs {runs}."
    )
    return ScheduleDefinition(
        name=schedule_name,
        job=job,
        cron_schedule=cron,
        default_status=DefaultScheduleStatus.RUNNING,
        description=f"Runs {runs} ({cron}).",
    )


data_quality_schedule = scheduled_check(
    hub_records_gx_suite, "data_quality_job", "hourly_data_quality", "0 * * * *",
    "the Great Expectations suite on a sample of every tenant's hub, hourly",
)  # fmt: skip
data_quality_job = data_quality_schedule.job


FRESHNESS = (
    "How long since each tenant's hub last changed, against `freshness:` of LILY_CONFIG "
    "(default a day; per-tenant overrides): warns naming the stale tenants."
)


@asset_check(asset=hub_records, description=FRESHNESS)
def hub_records_freshness(
    context: AssetCheckExecutionContext, lily: LilyResource
) -> AssetCheckResult:
    settings = lily.settings()
    tenants = context.instance.get_dynamic_partitions(TENANTS)
    results = assess(lily.hub(), tenants, settings.config.freshness, datetime.now(UTC))
    stale = [r.tenant for r in results if r.status == "stale"]
    return AssetCheckResult(
        passed=not stale,
        severity=AssetCheckSeverity.WARN,
        description=describe(results),
        metadata={
            "tenants_checked": len(results),
            "tenants_stale": MetadataValue.text(", ".join(stale) or "none"),
            "tenants_without_data": sum(r.status == "no_data" for r in results),
            "oldest_change_age_s": max((r.age_s or 0.0 for r in results), default=0.0),
            "tenants": MetadataValue.json({r.tenant: r.as_dict() for r in results}),
        },
    )


freshness_schedule = scheduled_check(
    hub_records_freshness, "freshness_job", "freshness_every_15_minutes", "*/15 * * * *",
    "hub_records_freshness: how long since each tenant's hub last changed, every 15 minutes",
)  # fmt: skip
freshness_job = freshness_schedule.job
# Checks these schedules run: left out of the streaming runs' selection.
SCHEDULED_CHECKS = (hub_records_gx_suite, hub_records_freshness)
