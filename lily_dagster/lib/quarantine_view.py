"""The latest quarantined events of a tenant as rows an operator can read in the UI: reason,
detail and an excerpt of the payload (its text, or a note of its size when it is not UTF-8)."""

from __future__ import annotations

from typing import Any

import polars as pl

VIEW_COLUMNS = ("quarantined_at", "event_id", "reason", "detail", "payload")


def payload_excerpt(raw: str | None, raw_bytes: bytes | None, limit: int) -> str:
    """At most `limit` characters of the payload; bytes that are not UTF-8 are described, not
    shown (the whole payload is in `lily quarantine export`)."""
    if raw is None:
        size = len(raw_bytes) if raw_bytes is not None else 0
        return f"<{size} bytes, not UTF-8>"
    text = raw.replace("\n", " ")
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
            "payload": payload_excerpt(row["raw"], row["raw_bytes"], excerpt),
        }
        for row in newest.iter_rows(named=True)
    ]
