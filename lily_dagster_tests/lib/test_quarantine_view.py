"""The newest quarantined events as the quarantine asset shows them in the UI."""

import json
from datetime import UTC, datetime, timedelta

import polars as pl

from lily_dagster.lib.envelope import REJECT_SCHEMA
from lily_dagster.lib.quarantine_view import latest_entries, payload_summary


def _entries(n: int) -> pl.DataFrame:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return pl.DataFrame(
        {
            "quarantine_id": [f"q{i}" for i in range(n)],
            "tenant": ["acme"] * n,
            "event_id": [f"e{i}" for i in range(n)],
            "reason": ["bad_json"] * n,
            "detail": ["line 1\ncolumn 2"] * n,
            "raw": [("x" * 300 if i % 2 else None) for i in range(n)],
            "raw_bytes": [(None if i % 2 else b"\xff\xfe") for i in range(n)],
            "origin": ["kafka:t/0/1"] * n,
            "quarantined_at": [start + timedelta(seconds=i) for i in range(n)],
        },
        schema=REJECT_SCHEMA,
    )


def test_the_newest_entries_come_first_and_are_bounded() -> None:
    rows = latest_entries(_entries(30), limit=20)
    assert len(rows) == 20
    assert [r["event_id"] for r in rows[:2]] == ["e29", "e28"]


def test_payloads_are_described_never_shown() -> None:
    """The rows are stored in Dagster's event log: no payload content, only what it was."""
    odd, even = latest_entries(_entries(2), limit=2, excerpt=50)
    assert odd["payload"] == "<300 bytes, not an envelope>"
    assert even["payload"] == "<2 bytes, not UTF-8>"
    envelope = json.dumps(
        {
            "op": "merge",
            "asset": {
                "type_name": "Table",
                "qualified_name": "default/pg/1/DB/SCH/ORDERS",
                "attributes": {"description": "SecretMarker", "owner_users": ["jane@x.org"]},
            },
        }
    )
    summary = payload_summary(envelope, None, 100)
    assert summary == f"Table default/pg/1/DB/SCH/ORDERS ({len(envelope)} bytes)"
    assert payload_summary(envelope, None, 20) == "Table default/pg/1/…"
