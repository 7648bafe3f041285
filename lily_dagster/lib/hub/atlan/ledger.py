"""The Atlan hub's ledger tables beside the LocalHub records: what Atlan holds of each
record (`published`: guid, status, version) and the children held for a parent
(`held`); how a publish's outcome is written there, and what it quarantines."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import polars as pl

from lily_dagster.lib.envelope import full_attributes, to_rejects
from lily_dagster.lib.hub.atlan.entities import LINEAGE_TYPES, TABLE_LIKE
from lily_dagster.lib.hub.base import SAMPLE_SIZE
from lily_dagster.lib.hub.local import materialise_changes
from lily_dagster.lib.reasons import Reason
from lily_dagster.lib.times import iso_utc

# What Atlan holds of each record, beside the ledger's records (sealed like any LocalHub's):
# names, guids, types, statuses and versions only, so nothing here is sealed (CONTRACT.md §7).
LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS published (
    qualified_name VARCHAR PRIMARY KEY,
    guid VARCHAR,
    type_name VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    version BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS held (
    qualified_name VARCHAR PRIMARY KEY,
    since TIMESTAMPTZ NOT NULL,
    missing VARCHAR NOT NULL
);
"""
PUBLISHED_SCHEMA: dict[str, pl.DataType] = {
    "qualified_name": pl.String(),
    "guid": pl.String(),
    "type_name": pl.String(),
    "status": pl.String(),
    "version": pl.Int64(),
}


@dataclass
class PublishOutcome:
    """What one publish did: counts, what Atlan now holds, refused and cascaded."""

    created: int = 0
    updated: int = 0
    archived: int = 0
    restored: int = 0
    unchanged: int = 0
    skipped_tags: int = 0
    published: list[dict[str, Any]] = field(default_factory=list)  # PUBLISHED_SCHEMA rows
    refused: list[tuple[str, str]] = field(default_factory=list)  # (qualified_name, error)
    sample: list[dict[str, str]] = field(default_factory=list)  # shown on the run's page
    # Active in the ledger, archived by Atlan with a parent: qualified name → (guid, type)
    cascaded: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)

    def note(self, qualified_name: str, change: str, guid: str | None) -> None:
        if len(self.sample) < SAMPLE_SIZE:
            self.sample.append(
                {"qualified_name": qualified_name, "change": change, "guid": guid or ""}
            )


def published_row(
    qn: str, guid: str | None, type_name: str, status: str, version: int
) -> dict[str, Any]:
    return {
        "qualified_name": qn,
        "guid": guid,
        "type_name": type_name,
        "status": status,
        "version": version,
    }


def references(records: pl.DataFrame) -> pl.DataFrame:
    """(qualified_name, ref): the assets each record's entity refers to: a column's or a
    table's parent, a lineage process's ends (whatever the record's status: a deleted record
    Atlan never had is created first)."""
    type_name = pl.col("type_name")
    has_parent_ref = (
        type_name.is_in(["Column", "Schema", "ColumnProcess", *TABLE_LIKE])
        & pl.col("parent_qualified_name").is_not_null()
    )
    refs = pl.concat_list(
        pl.when(has_parent_ref)
        .then(pl.concat_list(pl.col("parent_qualified_name")))
        .otherwise(pl.lit([], dtype=pl.List(pl.String))),
        pl.when(type_name.is_in(LINEAGE_TYPES))
        .then(pl.concat_list(pl.col("inputs").fill_null([]), pl.col("outputs").fill_null([])))
        .otherwise(pl.lit([], dtype=pl.List(pl.String))),
    )
    return records.select("qualified_name", refs.alias("ref")).explode("ref")


def held_children(
    waiting: pl.DataFrame, needs: pl.DataFrame, in_atlan: dict[str, str]
) -> pl.DataFrame:
    return (
        needs.join(waiting.select("qualified_name"), on="qualified_name", how="semi")
        .filter(pl.col("ref").is_not_null() & ~pl.col("ref").is_in(list(in_atlan)))
        .group_by("qualified_name")
        .agg(pl.col("ref").sort().str.join(", ").alias("missing"))
        .sort("qualified_name")
    )


def record_rejects(
    pending: pl.DataFrame, errors: pl.DataFrame, reason: Reason, tenant: str
) -> pl.DataFrame | None:
    """Quarantine entries for records: their content as an envelope, to fix and replay."""
    if errors.is_empty():
        return None
    rows = pending.join(errors, on="qualified_name", how="inner")
    out = []
    for row in rows.iter_rows(named=True):
        envelope = {
            "event_id": row["content_id"],
            "tenant": tenant,
            "source": "lily:hub",
            "op": "upsert",
            "event_time": iso_utc(row["content_time"]),
            "asset": {
                "type_name": row["type_name"],
                "qualified_name": row["qualified_name"],
                "name": row["name"],
                "attributes": full_attributes(row),
                "classifications": list(row["classifications"] or []),
                "inputs": list(row["inputs"] or []),
                "outputs": list(row["outputs"] or []),
            },
        }
        out.append(
            {
                "event_id": row["content_id"],
                "reason": reason.value,
                "detail": f"atlan: {row['error']}",
                "raw": json.dumps(envelope, sort_keys=True),
                "origin": "hub:atlan",
            }
        )
    return to_rejects(pl.DataFrame(out), tenant)


def concat_rejects(*frames: pl.DataFrame | None) -> pl.DataFrame | None:
    kept = [f for f in frames if f is not None and f.height]
    return pl.concat(kept) if kept else None


def write_outcome(
    con: duckdb.DuckDBPyConnection,
    outcome: PublishOutcome,
    held: pl.DataFrame,
    now: datetime,
    cutoff: datetime,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Record in the ledger what Atlan now holds, in one transaction; returns the records
    Atlan refused (qualified_name, error) and the orphans that waited past `cutoff`."""
    # A deleted record Atlan never had was created, then archived: its last entry holds.
    published = pl.DataFrame(outcome.published, schema=PUBLISHED_SCHEMA).unique(
        "qualified_name", keep="last", maintain_order=True
    )
    cascaded = pl.DataFrame(
        [(qn, guid) for qn, (guid, _type) in outcome.cascaded.items()],
        schema={"qualified_name": pl.String, "guid": pl.String},
        orient="row",
    )
    refused = pl.DataFrame(
        outcome.refused, schema={"qualified_name": pl.String, "error": pl.String}, orient="row"
    )
    con.execute("BEGIN TRANSACTION")
    # A guid Atlan did not list back (unchanged entity) keeps the one known before.
    con.register("published_new", published)
    con.execute(
        "INSERT OR REPLACE INTO published SELECT n.qualified_name, "
        "coalesce(n.guid, o.guid), n.type_name, n.status, n.version "
        "FROM published_new n LEFT JOIN published o USING (qualified_name)"
    )
    con.execute(
        "DELETE FROM held WHERE qualified_name IN (SELECT qualified_name FROM published_new)"
    )
    # Archived by Atlan with their parent: sent again by the next pass (restored).
    con.register("cascaded", cascaded)
    con.execute(
        "UPDATE published SET status = 'DELETED', version = 0, "
        "guid = coalesce(c.guid, published.guid) FROM cascaded c "
        "WHERE published.qualified_name = c.qualified_name"
    )
    con.register("held_now", held.with_columns(pl.lit(now).alias("since")))
    con.execute(
        "INSERT INTO held SELECT qualified_name, since, missing FROM held_now "
        "ON CONFLICT DO UPDATE SET missing = excluded.missing"
    )
    orphans = con.sql(
        "SELECT h.qualified_name, h.missing FROM held h WHERE h.since < ?",
        params=[cutoff],
    ).pl()
    gone = pl.concat([refused.select("qualified_name"), orphans.select("qualified_name")]).unique()
    con.register("gone", gone)
    # What Atlan never received leaves the ledger with its quarantine entry; what
    # it holds stays, at the version it holds.
    materialise_changes(con, gone)
    con.execute(
        "DELETE FROM records WHERE qualified_name IN (SELECT qualified_name FROM gone) "
        "AND qualified_name NOT IN (SELECT qualified_name FROM published)"
    )
    con.execute(
        "UPDATE published SET version = r.version FROM records r "
        "WHERE published.qualified_name = r.qualified_name "
        "AND published.qualified_name IN (SELECT qualified_name FROM gone)"
    )
    con.execute("DELETE FROM held WHERE qualified_name IN (SELECT qualified_name FROM gone)")
    con.execute("COMMIT")
    return refused, orphans
