"""The latest quarantined events of a tenant as rows an operator can read in the UI: reason,
detail and what the payload was (its type, qualified name and size). The payload itself is
not shown: the UI's rows are stored in Dagster's event log, outside the tenant's sealed
files (CONTRACT.md §7); `lily quarantine export` gives it whole."""

from __future__ import annotations

import json
from typing import Any

import polars as pl

VIEW_COLUMNS = ("quarantined_at", "event_id", "reason", "detail", "payload")


def payload_summary(raw: str | None, raw_bytes: bytes | None, limit: int) -> str:
    """What a payload is, in at most `limit` characters, without its content: an envelope's
    type and qualified name (names may be shown) and its size."""
    if raw is None:
        return f"<{len(raw_bytes) if raw_bytes is not None else 0} bytes, not UTF-8>"
    size = len(raw.encode("utf-8"))
    try:
        asset = json.loads(raw).get("asset")
        what = f"{asset['type_name']} {asset['qualified_name']}"
    except (ValueError, RecursionError, AttributeError, KeyError, TypeError):
        return f"<{size} bytes, not an envelope>"
    text = f"{what} ({size} bytes)"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def latest_entries(
    frame: pl.DataFrame, limit: int = 20, excerpt: int = 120
) -> list[dict[str, Any]]:
    """The `limit` newest entries of a quarantine frame (REJECT_SCHEMA), newest first."""
    newest = frame.sort("quarantined_at", descending=True, nulls_last=True).head(limit)
    return [
        {
            "quarantined_at": str(row["quarantined_at"]),
            "event_id": row["event_id"] or "",
            "reason": row["reason"],
            "detail": (row["detail"] or "")[:excerpt],
            "payload": payload_summary(row["raw"], row["raw_bytes"], excerpt),
        }
        for row in newest.iter_rows(named=True)
    ]
