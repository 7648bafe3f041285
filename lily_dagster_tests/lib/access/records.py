"""Records frames (RECORD_SCHEMA) for the access tests, built without a hub."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import polars as pl

from lily_dagster.lib.access.snapshot import Snapshot
from lily_dagster.lib.hub.base import RECORD_SCHEMA

WHEN = datetime(2026, 11, 1, tzinfo=UTC)


def record(
    qualified_name: str,
    type_name: str = "Table",
    classifications: list[str] | None = None,
    status: str = "ACTIVE",
    description: str | None = None,
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
    **attributes: Any,
) -> dict[str, Any]:
    row: dict[str, Any] = {c: None for c in RECORD_SCHEMA}
    row.update(
        qualified_name=qualified_name,
        status=status,
        type_name=type_name,
        name=qualified_name.rsplit("/", 1)[-1],
        description=description,
        classifications=classifications or [],
        inputs=inputs,
        outputs=outputs,
        content_upsert=True,
        content_time=WHEN,
        content_id=f"e-{qualified_name}",
        event_time=WHEN,
        event_id=f"e-{qualified_name}",
        updated_at=WHEN,
        version=1,
        **{k: v for k, v in attributes.items() if k in RECORD_SCHEMA},
    )
    return row


def snapshot(rows: list[dict[str, Any]]) -> Snapshot:
    frame = pl.DataFrame(rows, schema=RECORD_SCHEMA).sort("qualified_name")
    return Snapshot(frame, seq=len(rows))
