"""quarantined_events: each tenant's quarantine as an asset, refreshed by every ingest run."""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from lily_dagster.defs.partitions import tenant_partitions
from lily_dagster.defs.resources import LilyResource


@asset(
    partitions_def=tenant_partitions,
    group_name="validation",
    deps=["hub_records"],
    description="Events of the tenant that were rejected, with reason codes (README: "
    "Quarantine reason codes). `lily quarantine export` lists them; the "
    "quarantine_replay_job (or `lily quarantine replay`) sends them through every gate again.",
    kinds={"parquet"},
)
def quarantined_events(context: AssetExecutionContext, lily: LilyResource) -> MaterializeResult:
    for tenant in context.partition_keys:
        frame = lily.quarantine().read(tenant)
        by_reason = {
            r: int(n) for r, n in frame.group_by("reason").len().sort("reason").iter_rows()
        }
        newest = frame.get_column("quarantined_at").max() if frame.height else None
        context.add_asset_metadata(
            {
                "quarantined": frame.height,
                "by_reason": MetadataValue.json(by_reason),
                "newest": MetadataValue.text(str(newest) if newest else "none"),
            },
            partition_key=tenant,
        )
    return MaterializeResult()
