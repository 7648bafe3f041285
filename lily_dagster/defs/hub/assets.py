"""hub_records: the enriched events applied to the tenant's hub records."""

from datetime import UTC, datetime

import polars as pl
from dagster import AssetExecutionContext, AssetIn, MaterializeResult, MetadataValue, asset

from lily_dagster.defs.ingest.assets import mark_replays_applied
from lily_dagster.defs.partitions import tenant_partitions
from lily_dagster.defs.resources import LilyResource
from lily_dagster.lib.staging import batch_set_key


def latency_seconds(events: pl.DataFrame, now: datetime) -> dict[str, float]:
    """End-to-end latency (now - event_time) percentiles of a batch."""
    if events.is_empty():
        return {"p50": 0.0, "p95": 0.0}
    lat = events.select(
        (
            (
                pl.lit(now).cast(pl.Datetime("us", "UTC")) - pl.col("event_time")
            ).dt.total_milliseconds()
            / 1000
        ).alias("s")
    ).get_column("s")
    return {"p50": float(lat.quantile(0.5) or 0.0), "p95": float(lat.quantile(0.95) or 0.0)}


@asset(
    partitions_def=tenant_partitions,
    group_name="hub",
    description="The tenant's records in the metadata hub (LocalHub or Atlan), upserted "
    "last-writer-wins by (event_time, event_id).",
    ins={"landed_events": AssetIn(metadata={"columns": ["batch_id"]})},
    kinds={"duckdb"},
    # Writers to one hub share its API budget: `dagster instance concurrency set lily_hub N`
    # caps how many tenants write at once (Atlan: 400 requests/min for all of them).
    pool="lily_hub",
)
def hub_records(
    context: AssetExecutionContext,
    enriched_events: pl.DataFrame,
    landed_events: pl.DataFrame,
    lily: LilyResource,
) -> MaterializeResult:
    tenant = context.partition_key
    hub = lily.hub()
    result = hub.upsert(tenant, enriched_events)
    batch_ids = sorted(landed_events.get_column("batch_id").unique().to_list())
    refused = 0
    if result.rejects is not None and result.rejects.height:
        refused = lily.quarantine().add(tenant, f"hub-{batch_set_key(batch_ids)}", result.rejects)
        context.log.warning(f"the hub refused {refused} events of {tenant}; see its quarantine")
    replayed = mark_replays_applied(lily, tenant, batch_ids)
    # Only now is the batch safe to forget: its valid events are in the hub and its
    # invalid ones in the quarantine.
    lily.staging().mark_applied(tenant, batch_ids)
    latency = latency_seconds(enriched_events, datetime.now(UTC))
    counts = hub.status_counts(tenant)
    return MaterializeResult(
        metadata={
            "events_applied": enriched_events.height,
            "upserted": result.changed,
            "refused_by_hub": refused,
            "replayed_from_quarantine": replayed,
            **{f"records_{k}": v for k, v in result.as_dict().items()},
            **{f"hub_{k}": v for k, v in sorted(result.details.items())},
            "latency_p50_s": latency["p50"],
            "latency_p95_s": latency["p95"],
            "hub_active": counts.get("ACTIVE", 0),
            "hub_deleted": counts.get("DELETED", 0),
            "hub": MetadataValue.text(hub.name),
        },
    )
