"""enriched_events: valid events after the pre-ingest hooks."""

import polars as pl
from dagster import AssetExecutionContext, Output, asset

from lily_dagster.defs.partitions import tenant_partitions
from lily_dagster.lib.enrichment import normalise_owners


@asset(
    partitions_def=tenant_partitions,
    group_name="enrichment",
    description="Validated events after the pre-ingest hooks (owner normalisation).",
    kinds={"polars"},
)
def enriched_events(
    context: AssetExecutionContext, validated_events: pl.DataFrame
) -> Output[pl.DataFrame]:
    enriched = normalise_owners(validated_events)
    owners_changed = (
        enriched.height
        - enriched.select(
            pl.col("owner_users").eq_missing(validated_events.get_column("owner_users")).sum()
        ).item()
    )
    return Output(
        enriched, metadata={"events": enriched.height, "owners_normalised": owners_changed}
    )
