"""The `reconciliation` asset and the nightly schedule on a real Dagster instance, with a real
LocalHub under a temporary LILY_HOME and a LILY_CONFIG file: drift repaired, the fail-safes,
dry runs, invalid snapshot rows, an S3 snapshot, and one run request per configured tenant."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import polars as pl
import pytest
from dagster import (
    DagsterInstance,
    ExecuteInProcessResult,
    build_schedule_context,
    instance_for_test,
)

from lily_dagster.definitions import defs as load_definitions
from lily_dagster.defs.partitions import TENANTS
from lily_dagster.defs.reconciliation.assets import nightly_reconciliation
from lily_dagster.defs.resources import LilyResource
from lily_dagster.lib.envelope import decode_envelopes
from lily_dagster.lib.hub.local import LocalHub
from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster.settings import ConfigError
from lily_dagster_tests.conftest import AtlanEmulator
from lily_dagster_tests.support import envelopes
from lily_dagster_tests.support.sealed import ciphers_at

defs = load_definitions()

JOB = defs.resolve_job_def("reconciliation_job")
SCHEMA = "default/snowflake/1700000000/DB/SCH"
DBT = "default/dbt/1700000001/models/orders"
OLD = "2026-01-01T00:00:00Z"  # when the hub last heard of the drifted records
SNAPSHOT = "2026-02-01T00:00:00Z"  # the snapshot's events
LIVE = "2026-03-01T00:00:00Z"  # a live edit made after the snapshot's events


def table(
    name: str,
    event_time: str = SNAPSHOT,
    description: str | None = None,
    owners: list[str] | None = None,
    tenant: str = "acme",
    qualified_name: str | None = None,
) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    if description is not None:
        attributes["description"] = description
    if owners is not None:
        attributes["owner_users"] = owners
    return envelopes.envelope(
        qualified_name or f"{SCHEMA}/{name}",
        event_id=f"{name}@{event_time}",
        tenant=tenant,
        event_time=event_time,
        name=name,
        attributes=attributes,
    )


def use_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    path = tmp_path / "lily.yaml"
    path.write_text(text)
    monkeypatch.setenv("LILY_CONFIG", str(path))


def acme_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: str = "") -> Path:
    """acme reconciled from `snapshot/` next to the config file (a relative source)."""
    use_config(
        tmp_path,
        monkeypatch,
        f"tenants:\n  - name: acme\n    reconciliation: {{source: snapshot{options}}}\n",
    )
    return tmp_path / "snapshot"


def write_snapshot(directory: Path, envelopes: list[dict[str, Any]], extra: str = "") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(e) for e in envelopes]
    (directory / "tables.jsonl").write_text("\n".join(lines) + "\n" + extra)


def seed_hub(home: Path, envelopes: list[dict[str, Any]], tenant: str = "acme") -> None:
    """The hub as earlier live runs left it."""
    decoded = decode_envelopes(
        [json.dumps(e) for e in envelopes],
        [f"kafka:seed/0/{i}" for i in range(len(envelopes))],
        tenant=tenant,
        max_event_bytes=1_048_576,
    )
    LocalHub(home / "hub", ciphers=ciphers_at(home)).upsert(tenant, decoded.events)


def hub_state(home: Path, tenant: str = "acme") -> dict[str, tuple[str, str | None]]:
    """qualified name → (status, description)."""
    return {
        r["qualified_name"].removeprefix(f"{SCHEMA}/"): (
            r["status"],
            r["attributes"].get("description"),
        )
        for r in LocalHub(home / "hub", ciphers=ciphers_at(home)).export(tenant)
    }


def reconcile(
    instance: DagsterInstance, tenant: str = "acme", dry_run: bool | None = None
) -> ExecuteInProcessResult:
    instance.add_dynamic_partitions(TENANTS, [tenant])
    config = {"dry_run": dry_run} if dry_run is not None else {}
    return JOB.execute_in_process(
        partition_key=tenant,
        instance=instance,
        run_config={"ops": {"reconciliation": {"config": config}}},
    )


def metadata(outcome: ExecuteInProcessResult) -> dict[str, Any]:
    (materialization,) = outcome.asset_materializations_for_node("reconciliation")
    return {k: v.value for k, v in materialization.metadata.items()}


def test_drift_is_repaired_and_a_newer_live_record_is_kept(
    lily_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = acme_config(tmp_path, monkeypatch)
    seed_hub(
        lily_home,
        [
            table("ORDERS", OLD, "orders", owners=["jdoe"]),
            table("CHANGED", OLD, "old text"),
            table("STALE", OLD),
            table("EDITED", OLD, "old text"),
            table("EDITED", LIVE, "live edit"),
            table("T4", OLD),
            table("T5", OLD),
            table("MODEL", OLD, qualified_name=DBT),  # another connection: out of scope
        ],
    )
    write_snapshot(
        snapshot,
        [
            # compared after the pre-ingest hooks: owners normalise to ["jdoe"], no change
            table("ORDERS", OLD, "orders", owners=[" JDoe", "jdoe"]),
            table("CHANGED", description="new text"),
            table("EDITED", description="snapshot text"),
            table("T4", OLD),
            table("T5", OLD),
            table("MISSING", description="new table"),
        ],
    )
    with instance_for_test() as instance:
        meta = metadata(reconcile(instance))
        assert hub_state(lily_home) == {
            "ORDERS": ("ACTIVE", "orders"),
            "CHANGED": ("ACTIVE", "new text"),
            "STALE": ("DELETED", None),  # archived, not removed
            "EDITED": ("ACTIVE", "live edit"),  # newer than the snapshot: kept
            "T4": ("ACTIVE", None),
            "T5": ("ACTIVE", None),
            "MISSING": ("ACTIVE", "new table"),
            DBT: ("ACTIVE", None),
        }
        assert (meta["missing"], meta["changed"], meta["stale"], meta["unchanged"]) == (1, 2, 1, 3)
        assert meta["records_created"] == 1 and meta["records_updated"] == 1
        assert meta["records_archived"] == 1 and meta["records_kept_newer_hub_record"] == 1
        assert meta["archive_refused"] is False and meta["dry_run"] is False
        assert meta["live_in_scope"] == 6 and meta["hub_deleted"] == 1
        summary = meta["summary"]
        assert "| stale → archived | 1 |" in summary
        assert f"- `{SCHEMA}/CHANGED` (description)" in summary
        assert f"- `{SCHEMA}/STALE`" in summary

        # The same snapshot again: only the record a live edit overtook still differs.
        before = list(LocalHub(lily_home / "hub", ciphers=ciphers_at(lily_home)).export("acme"))
        again = metadata(reconcile(instance))
        assert (again["missing"], again["changed"], again["stale"]) == (0, 1, 0)
        assert (
            list(LocalHub(lily_home / "hub", ciphers=ciphers_at(lily_home)).export("acme"))
            == before
        )


def test_the_fail_safe_stops_a_mass_archive_but_applies_the_upserts(
    lily_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = acme_config(tmp_path, monkeypatch)
    seed_hub(lily_home, [table(f"T{i}", OLD, "old") for i in range(10)])
    # A truncated export: half the tables are absent.
    write_snapshot(
        snapshot,
        [
            *(table(f"T{i}", OLD, "old") for i in range(4)),
            table("T4", description="fixed"),
            table("NEW"),
        ],
    )
    with instance_for_test() as instance:
        outcome = reconcile(instance)
        assert outcome.success
        meta = metadata(outcome)
    state = hub_state(lily_home)
    assert {name for name, (status, _) in state.items() if status == "ACTIVE"} == {
        *(f"T{i}" for i in range(10)),
        "NEW",
    }
    assert state["T4"] == ("ACTIVE", "fixed")
    assert meta["archive_refused"] is True and meta["records_archived"] == 0
    assert meta["stale"] == 5 and meta["records_created"] == 1 and meta["records_updated"] == 1
    reason = meta["archive_refused_reason"]
    assert reason == (
        "5 of 10 live records in scope (50.0%) would be archived, more than max_archive_share 20.0%"
    )
    assert f"**Fail-safe: archiving refused.** {reason}." in meta["summary"]


def test_a_dry_run_changes_nothing_but_reports_the_diff(
    lily_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = acme_config(tmp_path, monkeypatch, ", dry_run: true")
    seed_hub(lily_home, [table(f"T{i}", OLD) for i in range(5)])
    write_snapshot(
        snapshot,
        [table("T0", description="now described"), *(table(f"T{i}", OLD) for i in (1, 2, 3))],
    )
    with instance_for_test() as instance:
        before = list(LocalHub(lily_home / "hub", ciphers=ciphers_at(lily_home)).export("acme"))
        meta = metadata(reconcile(instance))  # the tenant's setting: dry run
        assert (
            list(LocalHub(lily_home / "hub", ciphers=ciphers_at(lily_home)).export("acme"))
            == before
        )
        assert meta["dry_run"] is True and meta["archive_refused"] is False
        assert (meta["changed"], meta["stale"]) == (1, 1)
        assert not any(k.startswith("records_") for k in meta)
        assert meta["summary"].splitlines()[2] == "**Dry run**: nothing was applied."
        assert "| stale → to archive | 1 |" in meta["summary"]

        applied = metadata(reconcile(instance, dry_run=False))  # the run's config overrides it
        assert applied["dry_run"] is False and applied["records_archived"] == 1
    assert hub_state(lily_home)["T0"] == ("ACTIVE", "now described")
    assert hub_state(lily_home)["T4"] == ("DELETED", None)


def test_invalid_snapshot_rows_are_quarantined_and_archiving_is_refused(
    lily_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = acme_config(tmp_path, monkeypatch)
    seed_hub(lily_home, [table(f"T{i}", OLD) for i in range(10)])
    write_snapshot(
        snapshot,
        [
            *(table(f"T{i}", OLD) for i in range(9)),
            table("NEW"),
            table("OTHER", tenant="globex"),
            table("COLUMNLESS", qualified_name=f"{SCHEMA}/A/B/C"),
        ],
        extra='{"event_id": "cut", "tenant": "acme", "sou',  # a truncated last line
    )
    with instance_for_test() as instance:
        meta = metadata(reconcile(instance))
    quarantined = QuarantineStore(lily_home / "quarantine", ciphers_at(lily_home)).read("acme")
    # Each kept with its reason and where it was: snapshot:<file>#<line>.
    lines = [o.rsplit("#", 1)[1] for o in quarantined["origin"]]
    assert dict(zip(quarantined["reason"], lines, strict=True)) == {
        "tenant_mismatch": "11",
        "bad_qualified_name": "12",
        "malformed_json": "13",
    }
    assert '{"event_id": "cut", "tenant": "acme", "sou' in quarantined["raw"]
    assert set(quarantined["detail"].str.len_chars() > 0) == {True}
    state = hub_state(lily_home)
    assert state["T9"] == ("ACTIVE", None)  # 1 of 10 stale is under the limit, yet kept
    assert state["NEW"] == ("ACTIVE", None)  # valid rows still reach the hub
    assert meta["archive_refused"] is True and meta["quarantined"] == 3
    assert meta["rejected_by_reason"] == {
        "bad_qualified_name": 1,
        "malformed_json": 1,
        "tenant_mismatch": 1,
    }
    assert meta["archive_refused_reason"] == (
        "the snapshot failed its checks: 3 of 13 rows rejected "
        "(bad_qualified_name: 1, malformed_json: 1, tenant_mismatch: 1)"
    )


def test_an_s3_prefix_snapshot_reconciles_the_hub(
    lily_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_env: str
) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.create_bucket(Bucket="lily-snapshots")
    lines = "\n".join(json.dumps(table(f"T{i}", OLD)) for i in range(3))
    s3.put_object(Bucket="lily-snapshots", Key="acme/2026-11-24/part-0.jsonl", Body=lines.encode())
    rows = [
        dict(table(f"T{i}", OLD, owners=["jdoe"]), event_time=datetime(2026, 1, 1, tzinfo=UTC))
        for i in (3, 4)
    ]
    parquet = io.BytesIO()
    pl.DataFrame(rows).write_parquet(parquet)
    s3.put_object(
        Bucket="lily-snapshots", Key="acme/2026-11-24/part-1.parquet", Body=parquet.getvalue()
    )
    s3.put_object(Bucket="lily-snapshots", Key="acme/2026-11-24/_SUCCESS", Body=b"")
    use_config(
        tmp_path,
        monkeypatch,
        "tenants:\n  - name: acme\n    reconciliation:\n      source: s3://lily-snapshots/acme\n",
    )
    seed_hub(lily_home, [table(f"T{i}", OLD) for i in (1, 2, 5)])
    seed_hub(lily_home, [table(f"T{i}", OLD, owners=["jdoe"]) for i in (3, 4)])
    with instance_for_test() as instance:
        meta = metadata(reconcile(instance))
    assert hub_state(lily_home) == {
        **{f"T{i}": ("ACTIVE", None) for i in range(5)},
        "T5": ("DELETED", None),
    }
    assert meta["snapshot_files"] == 2 and meta["snapshot_rows"] == 5
    assert (meta["missing"], meta["stale"], meta["unchanged"]) == (1, 1, 4)


def test_a_tenant_without_reconciliation_fails_with_one_line(
    lily_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_config(tmp_path, monkeypatch, "tenants:\n  - name: acme\n")
    with instance_for_test() as instance, pytest.raises(ConfigError) as info:
        reconcile(instance)
    assert str(info.value) == (
        "tenant 'acme' has no reconciliation in LILY_CONFIG "
        "(tenants[].reconciliation.source; README: Reconciliation)"
    )


def test_the_schedule_requests_one_run_per_configured_tenant(
    lily_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_config(
        tmp_path,
        monkeypatch,
        "tenants:\n"
        "  - name: acme\n"
        "    reconciliation: {source: /nowhere/acme}\n"  # never read by the schedule
        "  - name: globex\n"
        "    reconciliation: {source: s3://inventory/globex, dry_run: true}\n"
        "  - name: initech\n",
    )
    tick = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(TENANTS, ["acme"])
        context = build_schedule_context(
            instance=instance,
            scheduled_execution_time=tick,
            resources={"lily": LilyResource()},
            repository_def=defs.get_repository_def(),
        )
        requests = nightly_reconciliation.evaluate_tick(context).run_requests or []
        assert [(r.partition_key, r.run_key) for r in requests] == [
            ("acme", "reconciliation:acme:2026-11-24"),
            ("globex", "reconciliation:globex:2026-11-24"),
        ]
        assert all(r.tags["lily/tenant"] == r.partition_key for r in requests)
        # globex had no partition yet (no live event so far): the schedule made it.
        assert set(instance.get_dynamic_partitions(TENANTS)) == {"acme", "globex"}

        use_config(tmp_path, monkeypatch, "tenants:\n  - name: acme\n")
        skipped = nightly_reconciliation.evaluate_tick(context)
        assert skipped.run_requests == [] and skipped.skip_message is not None
        assert "no tenant configures `reconciliation`" in skipped.skip_message
    assert nightly_reconciliation.cron_schedule == "0 2 * * *"
    assert nightly_reconciliation.default_status.value == "RUNNING"


def test_with_atlan_as_the_hub_drift_made_in_atlan_is_repaired(
    lily_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    atlan_emulator: AtlanEmulator,
) -> None:
    from lily_dagster.lib.hub.atlan import AtlanHub, AtlanOptions

    monkeypatch.setenv("LILY_HUB", "atlan")
    monkeypatch.setenv("ATLAN_BASE_URL", atlan_emulator.base_url)
    monkeypatch.setenv("ATLAN_API_KEY", atlan_emulator.api_key)
    monkeypatch.setenv("LILY_ATLAN_BACKOFF_S", "0.01")
    snapshot = acme_config(tmp_path, monkeypatch)
    tables = [table(f"T{i}", OLD, f"table {i}") for i in range(6)]
    options = AtlanOptions(base_url=atlan_emulator.base_url, api_key=atlan_emulator.api_key)
    live = AtlanHub(options, lily_home / "atlan-ledger")
    live.upsert(
        "acme",
        decode_envelopes(
            [json.dumps(e) for e in tables], ["seed"] * 6, tenant="acme", max_event_bytes=1 << 20
        ).events,
    )
    # Someone edits T0 in Atlan by hand (another client, not Lily's ledger).
    editor = AtlanHub(options, tmp_path / "editor-ledger")
    edited = table("T0", LIVE, "edited by hand")
    editor.upsert(
        "acme",
        decode_envelopes(
            [json.dumps(edited)], ["hand"], tenant="acme", max_event_bytes=1 << 20
        ).events,
    )
    write_snapshot(snapshot, tables)
    with instance_for_test() as instance:
        meta = metadata(reconcile(instance))
    assert meta["changed"] == 1 and meta["records_resynced"] >= 1
    in_atlan = {
        e["attributes"]["qualifiedName"]: e["attributes"].get("description")
        for e in atlan_emulator.entities()
    }
    assert in_atlan[f"{SCHEMA}/T0"] == "table 0"
    assert len(in_atlan) == 6
