"""The change log: one row per change of a hub record, written by the upsert that made it,
so that propagation reads exactly the changes since its last delivery instead of diffing
whole hubs."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from lily_dagster.lib.envelope import WELL_KNOWN_ATTRIBUTES
from lily_dagster.lib.json_exprs import inner, members, obj, value

CHANGE_SCHEMA: dict[str, pl.DataType] = {
    "seq": pl.Int64(),  # position in the tenant's change log, increasing
    "qualified_name": pl.String(),
    "type_name": pl.String(),
    "change": pl.String(),  # created | updated | archived | restored
    "version": pl.Int64(),  # the record's version after the change
    "name": pl.String(),
    "status": pl.String(),
    "attributes": pl.String(),  # JSON: every attribute (well-known ones included)
    "classifications": pl.List(pl.String()),
    "changed": pl.List(pl.String()),  # the fields that changed (empty when created)
    "before": pl.String(),  # JSON: the compared fields' previous values (null when created)
    "changed_at": pl.Datetime("us", "UTC"),
    # The hook framework's row identity (post-consume hooks run on change frames).
    "event_id": pl.String(),  # "change:<seq>"
    "raw": pl.String(),  # the change as delivered (JSON, CONTRACT.md §5 change object)
    "origin": pl.String(),  # "hub:<tenant>:<seq>"
}


# What the change log stores; event_id, raw and origin are derived on read.
STORED_COLUMNS = tuple(c for c in CHANGE_SCHEMA if c not in ("event_id", "raw", "origin"))


def attributes_json() -> pl.Expr:
    """A record's attributes object: its extras plus its non-null well-known attributes."""
    well_known = members([pl.col(c) for c in WELL_KNOWN_ATTRIBUTES], keep_nulls=False)
    return obj([inner(pl.col("attributes").fill_null("{}")), well_known])


def change_rows(
    records: pl.DataFrame, log: pl.DataFrame, tenant: str, first_seq: int, now: datetime
) -> pl.DataFrame:
    """Change-log rows as stored (STORED_COLUMNS of CHANGE_SCHEMA) for `log`
    (qualified_name, change, changed, before), with the records' content after the change
    (RECORD_SCHEMA rows), numbered from `first_seq` in qualified-name order."""
    rows = log.join(records, on="qualified_name", how="inner").sort("qualified_name")
    return rows.select(
        (pl.int_range(pl.len()) + first_seq).cast(pl.Int64).alias("seq"),
        "qualified_name",
        "type_name",
        "change",
        "version",
        "name",
        "status",
        attributes_json().alias("attributes"),
        pl.col("classifications").fill_null([]),
        pl.col("changed"),
        pl.col("before"),
        pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("changed_at"),
    ).cast({c: CHANGE_SCHEMA[c] for c in STORED_COLUMNS})


def with_identity(stored: pl.DataFrame, tenant: str) -> pl.DataFrame:
    """Stored change rows with the columns derived on read (event_id, raw, origin): built
    only for the changes a target actually reads, not for every upsert."""
    raw = obj(
        [
            members(
                [
                    pl.col("qualified_name"),
                    pl.col("type_name"),
                    pl.col("change"),
                    pl.col("version"),
                    pl.col("name"),
                ],
                keep_nulls=True,
            ),
            pl.concat_str([pl.lit('"attributes":'), pl.col("attributes")]),
            pl.concat_str(
                [pl.lit('"classifications":'), value(pl.col("classifications").fill_null([]))]
            ),
        ]
    )
    return stored.with_columns(
        pl.format("change:{}", pl.col("seq")).alias("event_id"),
        raw.alias("raw"),
        pl.format("hub:{}:{}", pl.lit(tenant), pl.col("seq")).alias("origin"),
    ).select(list(CHANGE_SCHEMA))
