"""quarantined_events: each tenant's quarantine as an asset, refreshed by every ingest run."""

from dagster import (
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from lily_dagster.defs.partitions import tenant_partitions
from lily_dagster.defs.resources import LilyResource
from lily_dagster.lib.quarantine_view import VIEW_COLUMNS, latest_entries

# How many of a tenant's newest quarantined events its materialisation shows.
SHOWN = 20
_SCHEMA = TableSchema(columns=[TableColumn(name, "string") for name in VIEW_COLUMNS])


@asset(
    partitions_def=tenant_partitions,
    group_name="ingest",
    # Where events are quarantined: the rules, then the hooks. The hub's refusals land there
    # too, so the step runs after hub_records (lowest priority of the ready steps).
    deps=["validated_events", "enriched_events"],
    op_tags={"dagster/priority": "-1"},
    description="Events of the tenant that were rejected, with reason codes (README: "
    "Quarantine reason codes); each materialisation shows the newest ones (latest_events). "
    "`lily quarantine export` lists them all; the "
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
                "latest_events": MetadataValue.table(
                    [TableRecord(row) for row in latest_entries(frame, SHOWN)], schema=_SCHEMA
                ),
            },
            partition_key=tenant,
        )
    return MaterializeResult()
