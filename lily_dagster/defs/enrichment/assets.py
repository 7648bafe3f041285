"""enriched_events: valid events after the tenant's pre-ingest hook chain."""

from collections.abc import Callable

import polars as pl
from dagster import AssetExecutionContext, MetadataValue, Output, asset

from lily_dagster.defs.partitions import tenant_partitions
from lily_dagster.defs.resources import LilyResource
from lily_dagster.lib.hooks import HookContext, run_chain, tenant_chain
from lily_dagster.lib.hub.base import MetadataHub
from lily_dagster.lib.staging import batch_set_key


def _lookup(hub: MetadataHub, tenant: str) -> Callable[[list[str]], set[str]]:
    return lambda names: hub.contains(tenant, names)


@asset(
    partitions_def=tenant_partitions,
    group_name="ingest",
    description="Validated events after the tenant's pre-ingest hooks (LILY_CONFIG `hooks`; "
    "default: erased-subjects, owner-normalise, pii-classify). Rows a hook rejects or fails "
    "on go to the quarantine.",
    kinds={"polars"},
)
def enriched_events(
    context: AssetExecutionContext, validated_events: pl.DataFrame | None, lily: LilyResource
) -> Output[pl.DataFrame | None]:
    if validated_events is None:
        for tenant in context.partition_keys:
            context.add_asset_metadata(
                {"events": 0, "input": "none (validated_events is not part of this run)"},
                partition_key=tenant,
            )
        return Output(None)
    settings = lily.settings()
    hub = lily.hub()
    parts: list[pl.DataFrame] = []
    for tenant in context.partition_keys:
        events = validated_events.filter(pl.col("tenant") == tenant)
        chain = tenant_chain(settings.config, tenant, "pre_ingest")
        result = run_chain(
            events, chain, HookContext(tenant=tenant, hub_lookup=_lookup(hub, tenant))
        )
        quarantined = 0
        if result.rejects.height:
            key = batch_set_key(events.get_column("batch_id").unique().to_list())
            quarantined = lily.quarantine().add(tenant, f"hooks-{key}", result.rejects)
            context.log.warning(f"hooks quarantined {quarantined} events of {tenant}")
        parts.append(result.events)
        context.add_asset_metadata(
            {
                "events": result.events.height,
                "hooks": ", ".join(h.name for h in chain) or "none",
                "quarantined_by_hooks": quarantined,
                "hook_stats": MetadataValue.json(result.stats),
            },
            partition_key=tenant,
        )
    return Output(pl.concat(parts, how="vertical") if parts else validated_events)
