"""AtlanHub against the Atlan emulator over HTTP, through pyatlan's client: the same merge
semantics as LocalHub, parents before children, refusals quarantined with Atlan's error,
429 storms and 503 bursts losing nothing and duplicating nothing, a revoked key failing
fast with nothing marked as sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from lily_dagster.lib.hub.atlan import AtlanHub, AtlanOptions
from lily_dagster.lib.hub.atlan.transport import AtlanAuthError, AtlanUnavailableError
from lily_dagster.settings import ConfigError
from lily_dagster_tests.conftest import AtlanEmulator
from lily_dagster_tests.support.envelopes import ev
from lily_dagster_tests.support.frames import frame

CONN = "default/snowflake/1700000000"
DB, SCH = f"{CONN}/DB", f"{CONN}/DB/SCH"
ORDERS = f"{SCH}/ORDERS"


def make_hub(
    emulator: AtlanEmulator, tmp_path: Path, orphan_wait_s: float = 86_400, **options: Any
) -> AtlanHub:
    settings = {"bulk_size": 50, "rate_per_min": None, "retries": 2, "backoff_s": 0.01, **options}
    return AtlanHub(
        AtlanOptions(base_url=emulator.base_url, api_key=emulator.api_key, **settings),
        tmp_path / "ledger",
        orphan_wait_s=orphan_wait_s,
    )


@pytest.fixture
def hub(atlan_emulator: AtlanEmulator, tmp_path: Path) -> AtlanHub:
    return make_hub(atlan_emulator, tmp_path)


def estate(minutes: float = 0, description: str = "orders") -> list[dict[str, Any]]:
    """A database, schema, table, two columns and a process, children listed first."""
    return [
        ev(
            "c1",
            f"{ORDERS}/EMAIL",
            minutes,
            type_name="Column",
            attributes={"parent_qualified_name": ORDERS, "data_type": "VARCHAR", "order": 1},
        ),
        ev(
            "c2",
            f"{ORDERS}/ID",
            minutes,
            type_name="Column",
            attributes={"parent_qualified_name": ORDERS, "data_type": "NUMBER", "order": 2},
        ),
        ev(
            "p1",
            f"{CONN}/process/load",
            minutes,
            type_name="Process",
            inputs=[ORDERS],
            outputs=[f"{SCH}/ORDERS_COPY"],
        ),
        ev("t2", f"{SCH}/ORDERS_COPY", minutes, attributes={"parent_qualified_name": SCH}),
        ev(
            "t1",
            ORDERS,
            minutes,
            attributes={"parent_qualified_name": SCH, "description": description},
            classifications=["PII"],
        ),
        ev("s1", SCH, minutes, type_name="Schema", attributes={"parent_qualified_name": DB}),
        ev("d1", DB, minutes, type_name="Database"),
    ]


def in_atlan(emulator: AtlanEmulator) -> dict[str, dict[str, Any]]:
    return {e["attributes"]["qualifiedName"]: e for e in emulator.entities()}


def test_estate_lands_parents_first_and_matches_the_ledger(
    hub: AtlanHub, atlan_emulator: AtlanEmulator
) -> None:
    result = hub.upsert("acme", frame(estate()))
    assert (result.created, result.pending, result.rejects) == (7, 0, None)
    atlan = in_atlan(atlan_emulator)
    assert set(atlan) == {r["qualified_name"] for r in hub.export("acme")}
    # The run reports the guids Atlan gave (shown on the hub_records run page).
    assert {s["qualified_name"]: s["guid"] for s in result.sample} == {
        qn: e["guid"] for qn, e in atlan.items()
    }
    assert {s["change"] for s in result.sample} == {"created"}
    column = atlan[f"{ORDERS}/EMAIL"]
    assert column["typeName"] == "Column" and column["status"] == "ACTIVE"
    assert column["attributes"]["dataType"] == "VARCHAR"
    assert column["attributes"]["table"]["uniqueAttributes"]["qualifiedName"] == ORDERS
    process = atlan[f"{CONN}/process/load"]["attributes"]
    assert [i["uniqueAttributes"]["qualifiedName"] for i in process["inputs"]] == [ORDERS]
    assert atlan[ORDERS]["attributes"]["description"] == "orders"
    # Sent once each: a second identical batch changes nothing and sends nothing new.
    received = atlan_emulator.stats()["bulk_entities_received"]
    again = hub.upsert("acme", frame(estate()))
    assert (again.created, again.updated) == (0, 0)
    assert atlan_emulator.stats()["bulk_entities_received"] == received


def test_update_archive_and_restore(hub: AtlanHub, atlan_emulator: AtlanEmulator) -> None:
    hub.upsert("acme", frame(estate()))
    updated = hub.upsert("acme", frame(estate(5, description="all orders")))
    assert updated.updated == 1 and updated.created == 0
    assert in_atlan(atlan_emulator)[ORDERS]["attributes"]["description"] == "all orders"
    archived = hub.upsert("acme", frame([ev("t1-del", ORDERS, 10, "delete")]))
    assert archived.archived == 1
    assert in_atlan(atlan_emulator)[ORDERS]["status"] == "DELETED"
    assert hub.status_counts("acme") == {"ACTIVE": 6, "DELETED": 1}
    # An older event does not bring it back; a newer upsert restores it.
    assert hub.upsert("acme", frame(estate(7))).restored == 0
    restored = hub.upsert("acme", frame(estate(20)))
    assert restored.restored == 1
    assert in_atlan(atlan_emulator)[ORDERS]["status"] == "ACTIVE"
    assert len(atlan_emulator.entities()) == 7


def statuses(records: Any) -> dict[str, str]:
    return {r["qualified_name"]: r["status"] for r in records}


def test_a_table_deleted_before_atlan_saw_it_is_created_archived_with_its_columns_active(
    hub: AtlanHub, atlan_emulator: AtlanEmulator
) -> None:
    # The table's latest event is a delete, never restored; its columns stay active; an
    # asset known only by its delete is a record too.
    events = [
        *estate(),
        ev("t1-del", ORDERS, 10, "delete"),
        ev("g-del", f"{SCH}/GONE", 3, "delete"),
    ]
    result = hub.upsert("acme", frame(events))
    assert result.pending == 0 and result.rejects is None
    atlan = {qn: e["status"] for qn, e in in_atlan(atlan_emulator).items()}
    exported = statuses(hub.export("acme"))
    assert atlan == exported
    assert atlan[ORDERS] == atlan[f"{SCH}/GONE"] == "DELETED"
    assert atlan[f"{ORDERS}/EMAIL"] == atlan[f"{ORDERS}/ID"] == "ACTIVE"
    assert len(atlan) == 8
    # Nothing is left to send: a second publish sends nothing.
    received = atlan_emulator.stats()["bulk_entities_received"]
    assert hub.upsert("acme", frame([])).archived == 0
    assert atlan_emulator.stats()["bulk_entities_received"] == received


def test_archiving_a_table_keeps_its_active_columns_active_in_atlan(
    hub: AtlanHub, atlan_emulator: AtlanEmulator
) -> None:
    hub.upsert("acme", frame(estate()))
    # Atlan archives the table's columns with it; the ledger still holds them active.
    result = hub.upsert("acme", frame([ev("t1-del", ORDERS, 10, "delete")]))
    assert result.archived == 1
    atlan = {qn: e["status"] for qn, e in in_atlan(atlan_emulator).items()}
    assert atlan == statuses(hub.export("acme"))
    assert atlan[ORDERS] == "DELETED" and atlan[f"{ORDERS}/EMAIL"] == "ACTIVE"
    # A column deleted with its table stays deleted; the table's restore brings back only it.
    hub.upsert("acme", frame([ev("c1-del", f"{ORDERS}/EMAIL", 11, "delete")]))
    hub.upsert("acme", frame([e for e in estate(20) if e["event_id"] == "t1"]))
    atlan = {qn: e["status"] for qn, e in in_atlan(atlan_emulator).items()}
    assert atlan == statuses(hub.export("acme"))
    assert atlan[ORDERS] == "ACTIVE" and atlan[f"{ORDERS}/EMAIL"] == "DELETED"


def test_child_is_held_until_its_parent_arrives(
    hub: AtlanHub, atlan_emulator: AtlanEmulator
) -> None:
    children = [e for e in estate() if e["asset"]["type_name"] == "Column"]
    held = hub.upsert("acme", frame(children))
    assert held.pending == 2 and held.created == 0
    assert atlan_emulator.entities() == []
    assert list(hub.export("acme")) == []  # not in Atlan yet
    parents = [e for e in estate() if e["asset"]["type_name"] != "Column"]
    landed = hub.upsert("acme", frame(parents))
    assert landed.created == 7 and landed.pending == 0
    assert len(atlan_emulator.entities()) == 7


def test_child_whose_parent_never_comes_is_quarantined_as_orphan(
    atlan_emulator: AtlanEmulator, tmp_path: Path
) -> None:
    hub = make_hub(atlan_emulator, tmp_path, orphan_wait_s=0)
    child = [e for e in estate() if e["event_id"] == "c1"]
    assert hub.upsert("acme", frame(child)).pending == 1
    later = hub.upsert("acme", frame([]))
    assert later.rejects is not None
    (reject,) = later.rejects.to_dicts()
    assert reject["reason"] == "orphan" and ORDERS in reject["detail"]
    assert json.loads(reject["raw"])["asset"]["qualified_name"] == f"{ORDERS}/EMAIL"
    assert atlan_emulator.entities() == []


def test_parent_already_in_atlan_is_found_not_held(
    hub: AtlanHub, atlan_emulator: AtlanEmulator, tmp_path: Path
) -> None:
    # Crawled into Atlan by another tool: Lily never published the table.
    other = make_hub(atlan_emulator, tmp_path / "other")
    other.upsert("acme", frame([e for e in estate() if e["asset"]["type_name"] != "Column"]))
    columns = [e for e in estate() if e["asset"]["type_name"] == "Column"]
    assert hub.upsert("acme", frame(columns)).created == 2


def test_entity_atlan_refuses_is_quarantined_with_its_error_the_rest_land(
    hub: AtlanHub, atlan_emulator: AtlanEmulator
) -> None:
    events = [*estate(), ev("bad", f"{CONN}/x/NOPE", 0, type_name="NoSuchAtlanType")]
    result = hub.upsert("acme", frame(events))
    assert result.created == 7
    assert result.rejects is not None
    (reject,) = result.rejects.to_dicts()
    assert reject["reason"] == "hub_refused" and "NoSuchAtlanType" in reject["detail"]
    assert reject["event_id"] == "bad"
    assert f"{CONN}/x/NOPE" not in {r["qualified_name"] for r in hub.export("acme")}
    # The ledger let the refused record go; the change that created it keeps its content.
    log = hub.changes("acme", 0, 100).filter(pl.col("qualified_name") == f"{CONN}/x/NOPE")
    assert log.select("change", "name", "type_name").rows() == [
        ("created", "NOPE", "NoSuchAtlanType")
    ]


def test_tags_attached_only_where_their_typedef_exists(
    hub: AtlanHub, atlan_emulator: AtlanEmulator
) -> None:
    events = [ev("t", ORDERS, 0, classifications=["PII", "NotATag"])]
    result = hub.upsert("acme", frame(events))
    assert result.details["skipped_tags"] == 1
    tags = in_atlan(atlan_emulator)[ORDERS]["classifications"]
    assert len(tags) == 1 and tags[0]["typeName"] == hub.tag_ids["PII"]


def test_429_storm_loses_nothing_and_duplicates_nothing(
    hub: AtlanHub, atlan_emulator: AtlanEmulator
) -> None:
    atlan_emulator.fault(429, count=6, retry_after=0.05)
    result = hub.upsert("acme", frame(estate()))
    assert result.created == 7
    assert len(atlan_emulator.entities()) == 7
    assert hub.transport.limiter.throttled >= 1
    assert atlan_emulator.stats()["status_counts"].get("429", 0) >= 1


def test_503_burst_within_the_retries_is_absorbed(
    hub: AtlanHub, atlan_emulator: AtlanEmulator
) -> None:
    atlan_emulator.fault(503, count=2)
    result = hub.upsert("acme", frame(estate()))
    assert result.created == 7
    # lily_hub_requests_total{outcome="retried"}: each retry pyatlan made, none failed
    assert result.details["requests_retried"] == 2
    assert result.details.get("requests_failed", 0) == 0


def test_persistent_503_fails_the_run_clearly_and_the_next_run_sends_everything(
    hub: AtlanHub, atlan_emulator: AtlanEmulator
) -> None:
    atlan_emulator.fault(503, count=1000, path_prefix="/api/meta/entity/bulk")
    with pytest.raises(AtlanUnavailableError, match="retry"):
        hub.upsert("acme", frame(estate()))
    assert atlan_emulator.entities() == []
    assert list(hub.export("acme")) == []  # nothing marked as in Atlan
    atlan_emulator.fault(None, count=0)
    atlan_emulator.reset()
    recovered = hub.upsert("acme", frame([]))
    assert recovered.created == 7
    assert len(atlan_emulator.entities()) == 7


def test_revoked_key_fails_fast_with_one_clear_error(
    hub: AtlanHub, atlan_emulator: AtlanEmulator
) -> None:
    atlan_emulator.revoke_key()
    with pytest.raises(AtlanAuthError, match="ATLAN_API_KEY"):
        hub.upsert("acme", frame(estate()))
    assert list(hub.export("acme")) == []


def test_listing_reads_atlan_and_resync_repairs_drift(
    hub: AtlanHub, atlan_emulator: AtlanEmulator
) -> None:
    hub.upsert("acme", frame(estate()))
    listing = hub.listing("acme")
    assert set(listing.get_column("qualified_name")) == {
        r["qualified_name"] for r in hub.export("acme")
    }
    assert listing.filter(pl.col("qualified_name") == ORDERS).row(0, named=True)[
        "classifications"
    ] == ["PII"]
    # Someone edits the table in Atlan by hand: the listing shows it, resync repairs it.
    other = make_hub(atlan_emulator, Path(str(hub.ledger.root) + "-editor"))
    other.upsert("acme", frame([ev("edit", ORDERS, 99, attributes={"description": "hand"})]))
    drifted = hub.listing("acme").filter(pl.col("qualified_name") == ORDERS)
    assert drifted.get_column("description").to_list() == ["hand"]
    assert hub.resync("acme", [ORDERS]) == 1
    assert in_atlan(atlan_emulator)[ORDERS]["attributes"]["description"] == "orders"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "ATLAN_BASE_URL"),
        ({"ATLAN_BASE_URL": "http://x"}, "ATLAN_API_KEY"),
        (
            {"ATLAN_BASE_URL": "http://x", "ATLAN_API_KEY": "k", "LILY_ATLAN_BULK_SIZE": "0"},
            "LILY_ATLAN_BULK_SIZE must be between 1 and 500",
        ),
        (
            {"ATLAN_BASE_URL": "http://x", "ATLAN_API_KEY": "k", "LILY_ATLAN_RATE_PER_MIN": "fast"},
            "LILY_ATLAN_RATE_PER_MIN must be a number",
        ),
    ],
)
def test_atlan_settings_errors_are_one_line(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        AtlanOptions.from_env(env)
    assert "\n" not in str(info.value)


def test_oauth_client_credentials_instead_of_an_api_key() -> None:
    env = {
        "ATLAN_BASE_URL": "https://acme.atlan.com",
        "ATLAN_OAUTH_CLIENT_ID": "client",
        "ATLAN_OAUTH_CLIENT_SECRET": "secret",
    }
    options = AtlanOptions.from_env(env)
    assert (options.api_key, options.oauth_client_id, options.bulk_size) == (None, "client", 50)
    assert options.rate_per_min == 400


def test_column_level_lineage_lands_after_its_process_and_columns(
    hub: AtlanHub, atlan_emulator: AtlanEmulator
) -> None:
    process = f"{CONN}/process/load"
    column_process = f"{process}/EMAIL"
    lineage = ev(
        "cp", column_process, 0, type_name="ColumnProcess",
        inputs=[f"{ORDERS}/EMAIL"], outputs=[f"{SCH}/ORDERS_COPY/EMAIL"],
        attributes={"parent_qualified_name": process},
    )  # fmt: skip
    copy_column = ev("cc", f"{SCH}/ORDERS_COPY/EMAIL", 0, type_name="Column",
                     attributes={"parent_qualified_name": f"{SCH}/ORDERS_COPY"})  # fmt: skip
    # Sent first, the column process waits for its process and both ends.
    assert hub.upsert("acme", frame([lineage])).pending == 1
    result = hub.upsert("acme", frame([*estate(), copy_column]))
    assert result.created == 9 and result.pending == 0
    attrs = in_atlan(atlan_emulator)[column_process]["attributes"]
    assert attrs["process"]["uniqueAttributes"]["qualifiedName"] == process
    assert [i["typeName"] for i in attrs["inputs"]] == ["Column"]
