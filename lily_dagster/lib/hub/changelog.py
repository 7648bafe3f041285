"""The change log: one row per change of a hub record, written by the upsert that made it,
so that propagation reads exactly the changes since its last delivery instead of diffing
whole hubs."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from lily_dagster.lib.envelope import EVENT_SCHEMA, WELL_KNOWN_ATTRIBUTES
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


# What the change log stores: the change's columns less those derived on read (event_id,
# raw, origin), with the record's attributes as stored in the record (well-known ones in
# their own columns, the extras as JSON): the attributes object is built on read, for the
# changes a target reads, not for every upsert (it cost ~2 s per 1M created records).
# Rows written before the split hold the whole object in `attributes` and nulls in the
# well-known columns, which reads back the same.
STORED_SCHEMA: dict[str, pl.DataType] = {
    **{c: t for c, t in CHANGE_SCHEMA.items() if c not in ("event_id", "raw", "origin")},
    **{c: EVENT_SCHEMA[c] for c in WELL_KNOWN_ATTRIBUTES},
}
# A record's latest change, kept on the record's own row while no partial change applies:
# a bulk load then writes each record once, not once more into the change log (~0.5 s per
# 1M records). The change moves to the change log (materialised) before the row changes.
LATEST_CHANGE = ("change_seq", "change", "changed", "before", "changed_at")
# The change log's column naming the event that made each change; on a record's own row
# (its latest change) that is the row's `event_id`.
SOURCE_EVENT = "source_event_id"


def attributes_json() -> pl.Expr:
    """A record's attributes object: its extras plus its non-null well-known attributes."""
    well_known = members([pl.col(c) for c in WELL_KNOWN_ATTRIBUTES], keep_nulls=False)
    return obj([inner(pl.col("attributes").fill_null("{}")), well_known])


def change_rows(
    records: pl.DataFrame, log: pl.DataFrame, tenant: str, first_seq: int, now: datetime
) -> pl.DataFrame:
    """Change-log rows as stored (STORED_SCHEMA) for `log` (qualified_name, change,
    changed, before), with the records' content after the change (RECORD_SCHEMA rows),
    numbered from `first_seq` in qualified-name order."""
    if log.height == records.height and log["qualified_name"].equals(records["qualified_name"]):
        rows = records.with_columns(log.drop("qualified_name"))  # aligned: no join needed
    else:
        rows = log.join(records, on="qualified_name", how="inner")
    # Numbered by rank, not sorted: the log is read by seq, and moving every column of the
    # rows into order cost ~0.3 s per 1M changes.
    seq = pl.col("qualified_name").rank("ordinal") - 1 + first_seq
    return rows.select(
        seq.cast(pl.Int64).alias("seq"),
        *[c for c in STORED_SCHEMA if c not in ("seq", "classifications", "changed_at")],
        pl.col("classifications").fill_null([]),
        pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("changed_at"),
        # The record's latest event made this change (`lily trace`); stored beside
        # STORED_SCHEMA, which is what propagation reads.
        pl.col("event_id").alias(SOURCE_EVENT),
    ).cast(STORED_SCHEMA)  # type: ignore[arg-type]


def with_identity(stored: pl.DataFrame, tenant: str) -> pl.DataFrame:
    """Stored change rows (STORED_SCHEMA) as CHANGE_SCHEMA rows, with the columns derived
    on read (attributes object, event_id, raw, origin): built only for the changes a target
    actually reads, not for every upsert."""
    stored = stored.with_columns(attributes_json().alias("attributes"))
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
