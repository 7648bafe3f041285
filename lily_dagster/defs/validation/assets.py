"""validated_events: envelopes that pass every rule; the rest go to the tenant's quarantine."""

import polars as pl
from dagster import AssetExecutionContext, MetadataValue, Output, asset

from lily_dagster.defs.partitions import tenant_partitions
from lily_dagster.defs.resources import LilyResource
from lily_dagster.lib.envelope import decode_envelopes
from lily_dagster.lib.staging import batch_set_key
from lily_dagster.lib.validation import envelope_rules, split_valid


@asset(
    partitions_def=tenant_partitions,
    group_name="validation",
    description="Landed events parsed as envelopes (CONTRACT.md §1) that pass the envelope "
    "rules; every rejected event is kept in the tenant's quarantine with its reason.",
    kinds={"polars"},
)
def validated_events(
    context: AssetExecutionContext, landed_events: pl.DataFrame, lily: LilyResource
) -> Output[pl.DataFrame]:
    tenant = context.partition_key
    settings = lily.settings()
    decoded = decode_envelopes(
        landed_events.get_column("value").to_list(),
        landed_events.get_column("origin").to_list(),
        tenant=tenant,
        max_event_bytes=settings.max_event_bytes,
    )
    origin_batch = landed_events.select("origin", "batch_id")
    events = decoded.events.join(origin_batch, on="origin", how="left")
    checked = split_valid(events, envelope_rules(expected_tenant=tenant), tenant)
    rejects = pl.concat([decoded.rejects, checked.rejects], how="vertical")
    kept = lily.quarantine().add(
        tenant, f"validation-{batch_set_key(landed_events.get_column('batch_id'))}", rejects
    )
    by_reason = {r: int(n) for r, n in rejects.group_by("reason").len().sort("reason").iter_rows()}
    if kept:
        context.log.warning(f"{kept} events quarantined for {tenant}: {by_reason}")
    return Output(
        checked.valid,
        metadata={
            "events_in": landed_events.height,
            "valid": checked.valid.height,
            "quarantined": kept,
            "quarantined_by_reason": MetadataValue.json(by_reason),
            "rule_failures": MetadataValue.json(checked.failures_by_rule),
        },
    )
