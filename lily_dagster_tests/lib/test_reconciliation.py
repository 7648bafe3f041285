"""Reconciliation's pure parts: the diff (scope, lists as sets, DELETED never stale), the
fail-safes at their boundaries, the events that carry a plan out, the summary, the config."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from lily_dagster.lib.envelope import decode_envelopes
from lily_dagster.lib.hub.base import LISTING_COLUMNS
from lily_dagster.lib.hub.local import LocalHub
from lily_dagster.lib.reconciliation import (
    RECONCILIATION_SOURCE,
    ReconciliationDiff,
    diff,
    plan,
    source_state,
    summary_markdown,
    to_events,
)
from lily_dagster.settings import ConfigError, load_config_file
from lily_dagster_tests.support import envelopes

SNOW = "default/snowflake/1700000000"
DBT = "default/dbt/1700000001"
SNAPSHOT_TIME = datetime(2026, 6, 1, tzinfo=UTC)


def event(
    qualified_name: str,
    *,
    event_time: str = "2026-05-01T00:00:00Z",
    op: str = "upsert",
    type_name: str = "Table",
    **attributes: Any,
) -> dict[str, Any]:
    return envelopes.envelope(
        qualified_name,
        event_id=f"{qualified_name}@{event_time}",
        op=op,
        event_time=event_time,
        type_name=type_name,
        attributes=attributes,
    )


def events(*envelopes: dict[str, Any]) -> pl.DataFrame:
    payloads = [json.dumps(e) for e in envelopes]
    decoded = decode_envelopes(
        payloads, [f"o{i}" for i in range(len(payloads))], tenant="acme", max_event_bytes=10**6
    )
    assert decoded.rejects.is_empty()
    return decoded.events


def listing(*envelopes: dict[str, Any], deleted: tuple[str, ...] = ()) -> pl.DataFrame:
    """A hub listing holding these records (ACTIVE unless named in `deleted`)."""
    records = source_state(events(*envelopes)).records.select(LISTING_COLUMNS)
    return records.with_columns(
        pl.when(pl.col("qualified_name").is_in(list(deleted)))
        .then(pl.lit("DELETED"))
        .otherwise(pl.col("status"))
        .alias("status")
    )


def tables(prefix: str, n: int) -> list[dict[str, Any]]:
    return [event(f"{prefix}/DB/SCH/T{i}") for i in range(n)]


def names(frame: pl.DataFrame) -> list[str]:
    return frame.get_column("qualified_name").to_list()


def diff_of(source: list[dict[str, Any]], hub: pl.DataFrame, **kw: Any) -> ReconciliationDiff:
    state = source_state(events(*source))
    return diff(state.records, hub, referenced=state.referenced, **kw)


# --- diff ---------------------------------------------------------------------------------


def test_missing_changed_stale_and_unchanged() -> None:
    t = [f"{SNOW}/DB/SCH/T{i}" for i in range(4)]
    hub = listing(
        event(t[0], description="same"),
        event(t[1], description="old", owner_users=["a"]),
        event(t[2]),
    )
    found = diff_of(
        [
            event(t[0], description="same"),
            event(t[1], description="new", owner_users=["b"]),
            event(t[3]),
        ],
        hub,
    )
    assert found.counts == {"missing": 1, "changed": 1, "stale": 1, "unchanged": 1}
    assert names(found.missing) == [t[3]] and names(found.stale) == [t[2]]
    assert found.changed.row(0, named=True)["differs"] == ["description", "owner_users"]
    assert found.upsert_names == [t[1], t[3]]
    assert found.live_in_scope == 3 and found.scope == (SNOW,)


def test_lists_compare_as_sets_and_null_equals_empty() -> None:
    qn = f"{SNOW}/DB/SCH/T"
    hub = listing(event(qn, owner_users=["b", "a"]))  # no owner_groups: null
    source = [event(qn, owner_users=["a", "b", "a"], owner_groups=[])]
    assert diff_of(source, hub).counts["unchanged"] == 1
    changed = diff_of([event(qn, owner_users=["a"], owner_groups=[])], hub)
    assert changed.changed.row(0, named=True)["differs"] == ["owner_users"]
    # A string is not a list: an empty description is not an absent one.
    assert diff_of([event(qn, owner_users=["a", "b"], description="")], hub).counts["changed"] == 1


def test_status_differences_are_changes_and_deleted_records_are_never_stale() -> None:
    t = [f"{SNOW}/DB/SCH/T{i}" for i in range(3)]
    hub = listing(event(t[0]), event(t[1]), event(t[2]), deleted=(t[1], t[2]))
    found = diff_of([event(t[0], op="delete"), event(t[1])], hub)
    assert found.counts == {"missing": 0, "changed": 2, "stale": 0, "unchanged": 0}
    assert [r["differs"] for r in found.changed.iter_rows(named=True)] == [["status"], ["status"]]
    assert found.live_in_scope == 1  # t[2] is already DELETED: nothing to archive


def test_only_the_snapshots_connections_or_the_configured_prefixes_can_be_stale() -> None:
    hub = listing(*tables(SNOW, 3), *tables(DBT, 2), event("lonely-name", type_name="Custom"))
    found = diff_of(tables(SNOW, 2), hub)
    assert found.scope == (SNOW,)
    assert names(found.stale) == [f"{SNOW}/DB/SCH/T2"]  # the dbt records are out of scope
    configured = diff_of(tables(SNOW, 2), hub, scope_prefixes=[f"{DBT}/"])
    assert configured.scope == (DBT,) and configured.live_in_scope == 2
    assert names(configured.stale) == [f"{DBT}/DB/SCH/T0", f"{DBT}/DB/SCH/T1"]
    # A prefix is a path: default/snowflake/17 does not cover default/snowflake/1700000000.
    assert diff_of(tables(SNOW, 2), hub, scope_prefixes=["default/snowflake/17"]).live_in_scope == 0


def test_lineage_ends_and_partial_changes_of_the_snapshot_are_not_stale() -> None:
    t = [f"{SNOW}/DB/SCH/T{i}" for i in range(3)]
    process = event(f"{SNOW}/process/p1", type_name="Process")
    process["asset"]["inputs"], process["asset"]["outputs"] = [t[0]], [t[1]]
    patch = event(t[2])
    patch["asset"]["attributes"] = {"lily_patch": {"set": {"description": "from slack"}}}
    hub = listing(*(event(q) for q in t))
    state = source_state(events(process, patch))
    assert state.partial_changes == 1 and names(state.records) == [f"{SNOW}/process/p1"]
    found = diff(state.records, hub, referenced=state.referenced)
    assert found.stale.is_empty() and found.live_in_scope == 3


def test_an_empty_hub_makes_everything_missing() -> None:
    found = diff_of(tables(SNOW, 2), listing())
    assert found.counts == {"missing": 2, "changed": 0, "stale": 0, "unchanged": 0}


# --- plan: the fail-safes -------------------------------------------------------------------


def test_archive_share_at_the_limit_is_allowed_and_beyond_it_refused() -> None:
    hub = listing(*tables(SNOW, 10))
    two_stale = diff_of(tables(SNOW, 8), hub)  # 2 of 10 = 20 %
    allowed = plan(two_stale, snapshot_ok=True, max_archive_share=0.2)
    assert not allowed.archive_refused and allowed.refusal_reason == ""
    assert names(allowed.archive) == [f"{SNOW}/DB/SCH/T8", f"{SNOW}/DB/SCH/T9"]
    assert allowed.stale_share == 0.2

    three_stale = diff_of(tables(SNOW, 7), hub)  # 30 %
    refused = plan(three_stale, snapshot_ok=True, max_archive_share=0.2)
    assert refused.archive_refused and refused.archive.is_empty()
    assert "3 of 10 live records in scope (30.0%)" in refused.refusal_reason
    assert "20.0%" in refused.refusal_reason
    assert not plan(three_stale, snapshot_ok=True, max_archive_share=0.3).archive_refused


def test_a_failed_or_empty_snapshot_archives_nothing_but_still_upserts() -> None:
    hub = listing(*tables(SNOW, 10))
    found = diff_of([*tables(SNOW, 9), event(f"{SNOW}/DB/SCH/NEW")], hub)  # 1 stale, 10 %
    failed = plan(found, snapshot_ok=False, snapshot_problem="3 of 13 rows rejected")
    assert failed.archive_refused and failed.refusal_reason == "3 of 13 rows rejected"
    assert failed.archive.is_empty() and failed.upsert_names == [f"{SNOW}/DB/SCH/NEW"]

    configured = diff_of([], hub, scope_prefixes=[SNOW])  # every record would go
    empty = plan(configured, snapshot_ok=True, max_archive_share=1.0)
    assert empty.archive_refused and empty.refusal_reason == "the source snapshot is empty"
    with pytest.raises(ValueError, match="max_archive_share"):
        plan(found, snapshot_ok=True, max_archive_share=0)


# --- the events, applied to a real LocalHub -------------------------------------------------


def test_the_plans_events_repair_the_hub_and_a_newer_live_record_is_kept(tmp_path: Path) -> None:
    hub = LocalHub(tmp_path / "hub")
    t = [f"{SNOW}/DB/SCH/T{i}" for i in range(6)]
    hub.upsert(
        "acme",
        events(
            *(event(q, description="old") for q in t[:5]),
            # edited live after the snapshot was taken: the snapshot is older news
            event(t[1], description="live edit", event_time="2026-07-01T00:00:00Z"),
        ),
    )
    snapshot = events(
        *(event(q, description="new", event_time="2026-05-15T00:00:00Z") for q in t[1:])
    )
    state = source_state(snapshot)
    decided = plan(diff(state.records, hub.listing("acme")), snapshot_ok=True)
    out = to_events(
        decided, snapshot, tenant="acme", snapshot_id="snap1", snapshot_time=SNAPSHOT_TIME
    )
    archive = out.archives.row(0, named=True)
    assert archive["event_id"] == f"reconcile:snap1:{t[0]}" and archive["op"] == "delete"
    assert archive["source"] == RECONCILIATION_SOURCE and archive["event_time"] == SNAPSHOT_TIME
    assert json.loads(archive["raw"])["asset"]["qualified_name"] == t[0]
    # upserts are the snapshot's own events, with their own times
    assert set(out.upserts.get_column("event_time")) == {datetime(2026, 5, 15, tzinfo=UTC)}

    upserted = hub.upsert("acme", out.upserts)
    archived = hub.upsert("acme", out.archives)
    assert (upserted.created, upserted.updated, upserted.unchanged) == (1, 3, 1)
    assert archived.archived == 1
    records = {r["qualified_name"]: r for r in hub.export("acme")}
    assert records[t[0]]["status"] == "DELETED"  # archived, not removed
    assert records[t[1]]["attributes"]["description"] == "live edit"
    assert {records[q]["attributes"]["description"] for q in t[2:]} == {"new"}
    # The same snapshot again changes nothing.
    assert hub.upsert("acme", out.archives).changed == 0


def test_summary_shows_counts_samples_and_the_fail_safe() -> None:
    hub = listing(*tables(SNOW, 30))
    found = diff_of([*tables(SNOW, 5), *tables(DBT, 25)], hub)
    text = summary_markdown(found, plan(found, snapshot_ok=True, dry_run=True), heading="# acme")
    assert text.startswith("# acme\n\n**Dry run**")
    assert "| missing from the hub → to create | 25 |" in text
    assert "| stale → to archive | 25 (refused) |" in text
    assert "**Fail-safe: archiving refused.** 25 of 30 live records in scope (83.3%)" in text
    assert "**Stale** (25, first 20):" in text
    assert text.count(f"- `{SNOW}/DB/SCH/") == 20
    assert text.count(f"- `{DBT}/DB/SCH/") == 20


# --- configuration --------------------------------------------------------------------------


def config_error(tmp_path: Path, reconciliation: str) -> str:
    path = tmp_path / "lily.yaml"
    path.write_text(f"tenants:\n  - name: acme\n    reconciliation: {reconciliation}\n")
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_reconciliation_config_defaults_and_one_line_errors(tmp_path: Path) -> None:
    path = tmp_path / "lily.yaml"
    path.write_text(
        "tenants:\n"
        "  - name: acme\n"
        "    reconciliation: {source: s3://inventory/acme, scope_prefixes: ['default/x/1/']}\n"
        "  - name: globex\n"
    )
    config = load_config_file(path)
    acme = config.tenant("acme")
    assert acme is not None and acme.reconciliation is not None
    assert acme.reconciliation.max_archive_share == 0.2 and not acme.reconciliation.dry_run
    assert acme.reconciliation.scope_prefixes == ["default/x/1"]
    assert config.tenant("globex").reconciliation is None  # type: ignore[union-attr]

    assert "max_archive_share: Input should be greater than 0" in config_error(
        tmp_path, "{source: snap, max_archive_share: 0}"
    )
    assert "less than or equal to 1" in config_error(tmp_path, "{source: s, max_archive_share: 2}")
    assert "reconciliation.source: Field required" in config_error(tmp_path, "{dry_run: true}")
    assert "Extra inputs are not permitted" in config_error(tmp_path, "{source: s, dryrun: true}")
    assert "expected a local path or s3://bucket/prefix" in config_error(
        tmp_path, "{source: 'gs://bucket/x'}"
    )
