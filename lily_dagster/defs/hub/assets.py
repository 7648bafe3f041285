"""hub_records: the enriched events applied to the tenant's hub records."""

from datetime import UTC, datetime

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetIn,
    MaterializeResult,
    MetadataValue,
    RetryRequested,
    asset,
)

from lily_dagster.defs.ingest.assets import mark_replays_applied
from lily_dagster.defs.partitions import tenant_partitions
from lily_dagster.defs.resources import LilyResource
from lily_dagster.lib.hub.base import HubUnavailableError
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


def changes_table(sample: list[dict[str, str]]) -> str:
    """Records the hub wrote in this run, with the guids the hub gave them."""
    rows = [f"| `{r['qualified_name']}` | {r['change']} | `{r['guid']}` |" for r in sample]
    return "\n".join(["| qualified name | change | guid |", "|---|---|---|", *rows])


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
    try:
        result = hub.upsert(tenant, enriched_events)
    except HubUnavailableError as exc:
        # Nothing is lost (the batch stays pending, the hub's outbox keeps what it did not
        # acknowledge): try the step again later; bad credentials and bugs fail at once.
        settings = lily.settings()
        raise RetryRequested(
            max_retries=settings.hub_retries, seconds_to_wait=settings.hub_retry_wait_s
        ) from exc
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
            # The change log's head: propagation_sensor compares it with each target's
            # position without opening the hub.
            "change_seq": hub.last_change(tenant),
            "hub": MetadataValue.text(hub.name),
            **(
                {"hub_changes": MetadataValue.md(changes_table(result.sample))}
                if result.sample
                else {}
            ),
        },
    )
