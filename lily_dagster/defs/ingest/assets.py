"""landed_events: the raw payloads a source landed for a tenant, as one micro-batch."""

import polars as pl
from dagster import AssetExecutionContext, Config, Output, asset

from lily_dagster.defs.partitions import tenant_partitions
from lily_dagster.defs.resources import LilyResource


class LandedEventsConfig(Config):
    """Which landed batches to process; empty means every pending batch of the tenant."""

    batch_ids: list[str] = []


@asset(
    partitions_def=tenant_partitions,
    group_name="ingest",
    description="Raw event payloads landed durably by a source (Kafka, webhook inbox) for "
    "one tenant, not yet applied to the hub.",
    kinds={"polars", "kafka"},
)
def landed_events(
    context: AssetExecutionContext, config: LandedEventsConfig, lily: LilyResource
) -> Output[pl.DataFrame]:
    tenant = context.partition_key
    staging = lily.staging()
    batch_ids = config.batch_ids or staging.pending(tenant)
    frame, manifests = staging.read(tenant, batch_ids)
    ids = [m.batch_id for m in manifests]
    skipped = sorted(set(batch_ids) - set(ids))
    if skipped:
        context.log.info(f"batches already applied, skipped: {skipped}")
    lag = max((int(m.details.get("kafka_lag", 0)) for m in manifests), default=0)
    return Output(
        frame,
        metadata={
            "events_in": frame.height,
            "batches": len(manifests),
            "batch_ids": ", ".join(ids) or "none",
            "kafka_lag": lag,
        },
    )
