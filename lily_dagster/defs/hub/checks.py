"""hub_records_gx_suite: Great Expectations on a sample of every tenant's hub, hourly."""

import json

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
