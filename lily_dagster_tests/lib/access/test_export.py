"""A page of records is exported column-wise exactly as record by record."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from lily_dagster.lib.hub.base import RECORD_SCHEMA, record_to_export, records_to_export
from lily_dagster_tests.lib.access.records import record


def test_a_page_exports_as_each_of_its_records() -> None:
    rows = [
        record("default/db/S/T", description='naïve ✓ "quoted"', owner_users=["jdoe"]),
        record("default/db/S/T/C", "Column", ["PII"], attributes='{"data_type": "VARCHAR"}'),
        record("default/db/S/P", "Process", inputs=["a"], outputs=None),
        record("default/db/S/D", status="DELETED", attributes='{"x": NaN}'),
        record("default/db/S/V", "View", inputs=["upstream"], outputs=["downstream"]),
    ]
    rows[0]["updated_at"] = datetime(2026, 12, 4, 18, 25, 24, 916134, tzinfo=UTC)
    frame = pl.DataFrame(rows, schema=RECORD_SCHEMA)
    assert records_to_export(frame) == [record_to_export(r) for r in frame.iter_rows(named=True)]
    assert records_to_export(frame)[3]["attributes"] == {"x": None}  # NaN reads as null
