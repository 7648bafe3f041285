"""lineage-check: every Process has inputs and outputs, and every end exists.

A Process with neither inputs nor outputs is rejected (`bad_lineage`). An end that is
neither in the batch nor in the hub is created as a reference record (type `
reference_type`, default `Asset`, attribute `lily_reference: true`) dated at the epoch, so
the real record, whenever it arrives, replaces it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import polars as pl
from pydantic import Field

from lily_dagster.lib.hooks import HookContext, HookOutput, PluginOptions, register_hook

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@register_hook("lineage-check")
class LineageCheck:
    name = "lineage-check"
    stage = "pre_ingest"

    class Options(PluginOptions):
        reference_type: str = Field(
            "Asset", description="Type name of the reference records made for lineage ends."
        )
        create_references: bool = Field(
            True, description="Make reference records for lineage ends the hub does not hold."
        )

    def configure(self, options: Options) -> dict[str, Any]:
        return options.model_dump()

    def apply(self, events: pl.DataFrame, config: dict[str, Any], ctx: HookContext) -> HookOutput:
        process = (pl.col("type_name") == "Process") & (pl.col("op") == "upsert")
        no_ends = (pl.col("inputs").list.len().fill_null(0) == 0) & (
            pl.col("outputs").list.len().fill_null(0) == 0
        )
        is_bad = events.select(process & no_ends).to_series()
        bad = events.filter(is_bad).with_columns(
            pl.lit("bad_lineage").alias("reason"),
            pl.lit("a Process needs inputs or outputs").alias("detail"),
        )
        kept = events.filter(~is_bad) if bad.height else events  # the common case: no copy
        if not config["create_references"]:
            return HookOutput(kept, bad)
        ends = (
            kept.lazy()
            .filter(pl.col("type_name") == "Process")
            .select(
                pl.concat_list(
                    pl.col("inputs").fill_null([]), pl.col("outputs").fill_null([])
                ).alias("qn")
            )
            .explode("qn")
            .drop_nulls()
            .unique()
            .collect()
        )
        # Only the ends missing from the batch reach Python (and the hub lookup). The semi
        # join hashes the few ends, not every qualified name of the batch.
        present = kept.select(pl.col("qualified_name").alias("qn")).join(ends, on="qn", how="semi")
        absent = ends.join(present, on="qn", how="anti")
        if absent.height and ctx.hub_lookup is not None:
            held = ctx.hub_lookup(absent.get_column("qn").to_list())
            if held:
                absent = absent.filter(~pl.col("qn").is_in(sorted(held)))
        if absent.is_empty():
            return HookOutput(kept, bad)
        references = (
            absent.select(pl.col("qn").alias("qualified_name"))
            .sort("qualified_name")
            .with_columns(
                pl.format("lineage-ref:{}", pl.col("qualified_name")).alias("event_id"),
                pl.lit(ctx.tenant).alias("tenant"),
                pl.lit("lily:lineage-check").alias("source"),
                pl.lit("upsert").alias("op"),
                pl.lit(EPOCH).cast(pl.Datetime("us", "UTC")).alias("event_time"),
                pl.lit(config["reference_type"]).alias("type_name"),
                pl.col("qualified_name").str.split("/").list.last().alias("name"),
                pl.lit('{"lily_reference":true}').alias("attributes"),
                pl.lit([], dtype=pl.List(pl.String)).alias("classifications"),
                pl.lit([], dtype=pl.List(pl.String)).alias("inputs"),
                pl.lit([], dtype=pl.List(pl.String)).alias("outputs"),
                pl.lit("hook:lineage-check").alias("origin"),
            )
            .with_columns(
                # The reference as an envelope, for the quarantine if anything later refuses it.
                pl.struct(
                    "event_id",
                    "tenant",
                    "source",
                    "op",
                    pl.lit("1970-01-01T00:00:00Z").alias("event_time"),
                    pl.struct(
                        "type_name",
                        "qualified_name",
                        "name",
                        pl.struct(pl.lit(True).alias("lily_reference")).alias("attributes"),
                    ).alias("asset"),
                )
                .struct.json_encode()
                .alias("raw")
            )
        )
        references = references.select(
            [
                pl.col(c).cast(t) if c in references.columns else pl.lit(None, dtype=t).alias(c)
                for c, t in events.schema.items()
            ]
        )
        return HookOutput(pl.concat([kept, references]), bad)
