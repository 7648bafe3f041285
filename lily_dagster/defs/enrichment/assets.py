"""enriched_events: valid events after the tenant's pre-ingest hook chain."""

import polars as pl
from dagster import AssetExecutionContext, MetadataValue, Output, asset

from lily_dagster.defs.partitions import tenant_partitions
from lily_dagster.defs.resources import LilyResource
from lily_dagster.lib.hooks import HookContext, run_chain, tenant_chain
from lily_dagster.lib.staging import batch_set_key


@asset(
    partitions_def=tenant_partitions,
    group_name="enrichment",
    description="Validated events after the tenant's pre-ingest hooks (LILY_CONFIG `hooks`; "
    "default: owner-normalise). Rows a hook rejects or fails on go to the quarantine.",
    kinds={"polars"},
)
def enriched_events(
    context: AssetExecutionContext, validated_events: pl.DataFrame, lily: LilyResource
) -> Output[pl.DataFrame]:
    tenant = context.partition_key
    settings = lily.settings()
    chain = tenant_chain(settings.config, tenant, "pre_ingest")
    hub = lily.hub()
    result = run_chain(
        validated_events,
        chain,
        HookContext(tenant=tenant, hub_lookup=lambda names: hub.contains(tenant, names)),
    )
    quarantined = 0
    if result.rejects.height:
        key = batch_set_key(validated_events.get_column("batch_id").unique().to_list())
        quarantined = lily.quarantine().add(tenant, f"hooks-{key}", result.rejects)
        context.log.warning(f"hooks quarantined {quarantined} events of {tenant}")
    return Output(
        result.events,
        metadata={
            "events": result.events.height,
            "hooks": ", ".join(h.name for h in chain) or "none",
            "quarantined_by_hooks": quarantined,
            "hook_stats": MetadataValue.json(result.stats),
        },
    )
