"""Scheduled checks on hub_records, each run by a job of its own (never planned in the
streaming runs, where every check costs events per run): hub_records_gx_suite (Great
Expectations on a sample of every tenant's hub, hourly) and hub_records_freshness (how long
since each tenant's hub last changed, every 15 minutes)."""

import json
from datetime import UTC, datetime

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
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


data_quality_job = define_asset_job(
    "data_quality_job",
    selection=AssetSelection.checks(hub_records_gx_suite),
    description="Runs the Great Expectations suite over every tenant's hub.",
)
data_quality_schedule = ScheduleDefinition(
    name="hourly_data_quality",
    job=data_quality_job,
    cron_schedule="0 * * * *",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Hourly GX suite on a sample of each tenant's hub records.",
)


@asset_check(
    asset=hub_records,
    description="How long since each tenant's hub last changed, against `freshness:` of "
    "LILY_CONFIG (default a day; per-tenant overrides): warns naming the stale tenants.",
)
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


freshness_job = define_asset_job(
    "freshness_job",
    selection=AssetSelection.checks(hub_records_freshness),
    description="Checks how long since each tenant's hub last changed.",
)
freshness_schedule = ScheduleDefinition(
    name="freshness_every_15_minutes",
    job=freshness_job,
    cron_schedule="*/15 * * * *",
    default_status=DefaultScheduleStatus.RUNNING,
    description="The hub_records_freshness check of every tenant, every 15 minutes.",
)
# Checks these schedules run: left out of the streaming runs' selection.
SCHEDULED_CHECKS = (hub_records_gx_suite, hub_records_freshness)
