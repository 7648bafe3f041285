"""A multi-tenant backfill (no --tenant) gives each tenant exactly what a backfill of that
tenant's own rows gives: the same hub records and the same quarantine. Rows naming no valid
tenant are counted and kept under `_unrouted` with the decoder's reason; a killed load resumes
tenant by tenant without applying a batch twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from lily_dagster.bench.estate import write_estate
from lily_dagster.lib.backfill import run_backfill
from lily_dagster.lib.backfill_routed import RoutedReport, run_routed_backfill
from lily_dagster.lib.hub.local import LocalHub
from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster.settings import UNROUTED_TENANT, LilyConfigFile
from lily_dagster_tests.support.envelopes import envelope

TENANTS = ("acme", "globex", "initech")
SCHEMA = "default/snowflake/1700000000/DB/SCH"


def lines_of(tenant: str) -> list[str]:
    """A tenant's rows: a column before its table, valid tables, invalid rows."""
    table = f"{SCHEMA}/ORDERS"
    column = envelope(
        f"{table}/ID",
        tenant=tenant,
        type_name="Column",
        attributes={"parent_qualified_name": table, "data_type": "INT"},
    )
    rows: list[dict[str, Any]] = [
        column,
        envelope(table, tenant=tenant, attributes={"tenant": "not-this-one"}),
        *(envelope(f"{SCHEMA}/T{i}", tenant=tenant) for i in range(3)),
        envelope(f"{SCHEMA}/BAD", tenant=tenant, type_name="not a type"),
        {k: v for k, v in envelope(f"{SCHEMA}/NOID", tenant=tenant).items() if k != "event_id"},
    ]
    lines = [json.dumps(r) for r in rows]
    # The top-level key escaped: routed by parsing, as the decoder reads it.
    lines.append(
        json.dumps(envelope(f"{SCHEMA}/ESC", tenant=tenant)).replace('"tenant"', '"ten\\u0061nt"')
    )
    return lines


UNROUTABLE = [
    json.dumps({k: v for k, v in envelope(f"{SCHEMA}/X1").items() if k != "tenant"}),
    json.dumps({**envelope(f"{SCHEMA}/X2"), "tenant": 42}),
    json.dumps({**envelope(f"{SCHEMA}/X3"), "tenant": "Not-A-Tenant"}),
    '{"tenant": "acme", "event_id": ',  # not JSON
]


def interleaved() -> list[str]:
    per = [lines_of(t) for t in TENANTS]
    mixed = [line for group in zip(*per, strict=True) for line in group]
    return [*mixed[:5], *UNROUTABLE, *mixed[5:]]


def exports(home: Path, tenant: str) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]]]:
    records = [
        {k: v for k, v in r.items() if k != "updated_at"}
        for r in LocalHub(home / "hub").export(tenant)
    ]
    q = QuarantineStore(home / "quarantine").read(tenant)
    rejects = sorted(
        zip(
            q.get_column("reason").to_list(),
            q.get_column("detail").to_list(),
            q.get_column("raw").cast(pl.String).to_list(),
            strict=True,
        )
    )
    return sorted(records, key=lambda r: r["qualified_name"]), rejects


def routed(home: Path, source: Path, **kwargs: Any) -> RoutedReport:
    return run_routed_backfill(
        LocalHub(home / "hub"),
        QuarantineStore(home / "quarantine"),
        LilyConfigFile(),
        str(source),
        **kwargs,
    )


def single(home: Path, tenant: str, source: Path, batch_rows: int = 7) -> None:
    run_backfill(
        LocalHub(home / "hub"),
        QuarantineStore(home / "quarantine"),
        LilyConfigFile(),
        tenant,
        str(source),
        batch_rows=batch_rows,
    )


def test_json_lines_of_three_tenants_load_as_three_single_tenant_loads(tmp_path: Path) -> None:
    source = tmp_path / "all.jsonl"
    source.write_text("\n".join(interleaved()) + "\n")
    report = routed(tmp_path / "routed", source, batch_rows=7)
    for tenant in TENANTS:
        own = tmp_path / f"{tenant}.jsonl"
        own.write_text("\n".join(lines_of(tenant)) + "\n")
        single(tmp_path / "single", tenant, own)
        assert exports(tmp_path / "routed", tenant) == exports(tmp_path / "single", tenant)
        records, rejects = exports(tmp_path / "routed", tenant)
        assert len(records) == 6 and [r[0] for r in rejects] == ["bad_type_name", "missing_field"]
    assert report.unrouted == len(UNROUTABLE)
    _, unrouted = exports(tmp_path / "routed", UNROUTED_TENANT)
    assert [r[0] for r in unrouted] == [
        "bad_tenant",
        "malformed_json",
        "missing_field",
        "wrong_type",
    ]
    assert sorted(r[2] for r in unrouted) == sorted(UNROUTABLE)  # byte for byte
    figures = report.as_dict()
    assert figures["rows_read"] == len(interleaved())
    assert figures["applied"] == 3 * 6 and figures["quarantined"] == 3 * 2 + len(UNROUTABLE)


def test_parquet_of_three_tenants_loads_as_three_single_tenant_loads(tmp_path: Path) -> None:
    parts = []
    for tenant in TENANTS:
        write_estate(tmp_path / tenant, 300, tenant=tenant, rows_per_file=300, seed=3)
        (own,) = sorted((tmp_path / tenant).rglob("*.parquet"))
        single(tmp_path / "single", tenant, own, batch_rows=1000)
        parts.append(pl.read_parquet(own))
    mixed = pl.concat(parts).sample(fraction=1.0, shuffle=True, seed=1)
    nobody = mixed.head(2).with_columns(pl.lit(None, pl.String).alias("tenant"))
    source = tmp_path / "all.parquet"
    pl.concat([mixed, nobody]).write_parquet(source)
    report = routed(tmp_path / "routed", source, batch_rows=250)
    for tenant in TENANTS:
        records, _ = exports(tmp_path / "routed", tenant)
        assert len(records) >= 300
        assert exports(tmp_path / "routed", tenant) == exports(tmp_path / "single", tenant)
    assert report.unrouted == 2
    assert [r[0] for r in exports(tmp_path / "routed", UNROUTED_TENANT)[1]] == ["missing_field"] * 2


def test_a_killed_multi_tenant_load_resumes_tenant_by_tenant(tmp_path: Path) -> None:
    source = tmp_path / "all.jsonl"
    source.write_text("\n".join(interleaved()) + "\n")

    def kill_after_two(report: RoutedReport) -> None:
        if report.rows_read >= 14:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        routed(tmp_path / "home", source, batch_rows=7, progress=kill_after_two)
    resumed = routed(tmp_path / "home", source, batch_rows=7)
    assert {r.resumed_at_row for r in resumed.tenants.values()} == {14}
    hub = LocalHub(tmp_path / "home" / "hub")
    for tenant in TENANTS:
        log = hub.changes(tenant, 0, 1000)
        created = log.filter(log["change"] == "created")["qualified_name"]
        assert created.n_unique() == created.len() == 6  # each record created once
    again = routed(tmp_path / "home", source, batch_rows=7)
    assert all(r.batches == 0 for r in again.tenants.values())
