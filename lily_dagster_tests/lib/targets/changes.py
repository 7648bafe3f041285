"""Change frames (CHANGE_SCHEMA) for target tests: give only the fields a test is about."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from lily_dagster.lib.targets import CHANGE_SCHEMA

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
TENANT = "acme"


def change_row(row: dict[str, Any], seq: int) -> dict[str, Any]:
    """One CHANGE_SCHEMA row from a partial one.

    `attributes` and `before` may be dicts (JSON-encoded here); `name` defaults to the last
    part of `qualified_name`, `type_name` to Table, `change` to updated, `status` to DELETED
    for archived changes and ACTIVE otherwise; `raw` is the CONTRACT §5 change object of
    the row unless given."""
    unknown = set(row) - set(CHANGE_SCHEMA)
    if unknown:
        raise ValueError(f"not CHANGE_SCHEMA fields: {sorted(unknown)}")
    qn = row.get("qualified_name", f"default/snowflake/1700000000/DB/SCH/T{seq}")
    change = row.get("change", "updated")
    attributes = row.get("attributes", {})
    before = row.get("before")
    full: dict[str, Any] = {
        "seq": row.get("seq", seq),
        "qualified_name": qn,
        "type_name": row.get("type_name", "Table"),
        "change": change,
        "version": row.get("version", 1),
        "name": row.get("name", qn.rsplit("/", 1)[-1]),
        "status": row.get("status", "DELETED" if change == "archived" else "ACTIVE"),
        "attributes": attributes if isinstance(attributes, str) else json.dumps(attributes),
        "classifications": row.get("classifications", []),
        "changed": row.get("changed", []),
        "before": before if before is None or isinstance(before, str) else json.dumps(before),
        "changed_at": row.get("changed_at", T0 + timedelta(seconds=seq)),
    }
    full["event_id"] = row.get("event_id", f"change:{full['seq']}")
    full["origin"] = row.get("origin", f"hub:{TENANT}:{full['seq']}")
    full["raw"] = row.get("raw") or json.dumps(
        {
            "qualified_name": qn,
            "type_name": full["type_name"],
            "change": change,
            "version": full["version"],
            "name": full["name"],
            "attributes": json.loads(full["attributes"]),
            "classifications": full["classifications"],
        }
    )
    return full


def change_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """A batch of changes in CHANGE_SCHEMA, seq numbered from 1 in the given order."""
    return pl.DataFrame(
        [change_row(row, seq) for seq, row in enumerate(rows, start=1)], schema=CHANGE_SCHEMA
    )
