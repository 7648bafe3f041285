"""lineage-check: every Process has inputs and outputs, and every end exists.

A Process with neither inputs nor outputs is rejected (`bad_lineage`). An end that is
neither in the batch nor in the hub is created as a reference record (type `settings.
reference_type`, default `Asset`, attribute `lily_reference: true`) dated at the epoch, so
the real record, whenever it arrives, replaces it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import polars as pl

from lily_dagster.lib.hooks import HookContext, HookOutput, register_hook
from lily_dagster.settings import ConfigError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@register_hook("lineage-check")
class LineageCheck:
    name = "lineage-check"
    stage = "pre_ingest"

    def configure(self, settings: dict[str, Any]) -> dict[str, Any]:
        unknown = set(settings) - {"reference_type", "create_references"}
        if unknown:
            raise ConfigError(f"unknown settings {sorted(unknown)}")
        return {
            "reference_type": str(settings.get("reference_type", "Asset")),
            "create_references": bool(settings.get("create_references", True)),
        }

    def apply(self, events: pl.DataFrame, config: dict[str, Any], ctx: HookContext) -> HookOutput:
        process = (pl.col("type_name") == "Process") & (pl.col("op") == "upsert")
        no_ends = (pl.col("inputs").list.len().fill_null(0) == 0) & (
            pl.col("outputs").list.len().fill_null(0) == 0
        )
        bad = events.filter(process & no_ends).with_columns(
            pl.lit("bad_lineage").alias("reason"),
            pl.lit("a Process needs inputs or outputs").alias("detail"),
        )
        kept = events.filter(~(process & no_ends))
        if not config["create_references"]:
            return HookOutput(kept, bad)
        ends = (
            kept.filter(process)
            .select(
                pl.concat_list(
                    pl.col("inputs").fill_null([]), pl.col("outputs").fill_null([])
                ).alias("qn")
            )
            .explode("qn")
            .drop_nulls()
            .unique()
            .get_column("qn")
            .to_list()
        )
        present = set(kept.get_column("qualified_name").to_list())
        missing = sorted(set(ends) - present)
        if missing and ctx.hub_lookup is not None:
            missing = sorted(set(missing) - ctx.hub_lookup(missing))
        if not missing:
            return HookOutput(kept, bad)
        tenant = ctx.tenant
        rows = []
        for qn in missing:
            envelope = {
                "event_id": f"lineage-ref-{hashlib.sha256(qn.encode()).hexdigest()[:24]}",
                "tenant": tenant,
                "source": "lily:lineage-check",
                "op": "upsert",
                "event_time": "1970-01-01T00:00:00Z",
                "asset": {
                    "type_name": config["reference_type"],
                    "qualified_name": qn,
                    "name": qn.rsplit("/", 1)[-1],
                    "attributes": {"lily_reference": True},
                },
            }
            rows.append(
                {
                    "event_id": envelope["event_id"],
                    "tenant": tenant,
                    "source": envelope["source"],
                    "op": "upsert",
                    "event_time": EPOCH,
                    "type_name": config["reference_type"],
                    "qualified_name": qn,
                    "name": envelope["asset"]["name"],  # type: ignore[index]
                    "attributes": '{"lily_reference":true}',
                    "classifications": [],
                    "inputs": [],
                    "outputs": [],
                    "raw": json.dumps(envelope),
                    "origin": "hook:lineage-check",
                }
            )
        references = pl.DataFrame(rows, schema={k: events.schema[k] for k in rows[0]}).select(
            [
                pl.col(c) if c in rows[0] else pl.lit(None, dtype=t).alias(c)
                for c, t in events.schema.items()
            ]
        )
        return HookOutput(pl.concat([kept, references]), bad)
