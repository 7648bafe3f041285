"""The Atlan hub's ledger (LILY_HUB=atlan) with tenant keys, against the Atlan emulator:
its files hold no content in plaintext while the ledger's reads (the access API's, `lily
hub export`) and what Atlan receives are plaintext; `AtlanHub.erase_subject` scrubs the
ledger and sends the changed records to Atlan as updates, or with `purge` deletes them
from Atlan for good and recreates them, scrubbed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lily_dagster.lib.crypto import Ciphers
from lily_dagster.lib.gdpr.subject import Subject
from lily_dagster.lib.hub.atlan import AtlanHub, AtlanOptions
from lily_dagster.lib.hub.atlan.transport import AtlanUnavailableError
from lily_dagster.lib.hub.base import HubErasure
from lily_dagster_tests.conftest import AtlanEmulator
from lily_dagster_tests.lib.hub.conftest import dumps, files_holding
from lily_dagster_tests.support.envelopes import ev
from lily_dagster_tests.support.frames import frame

CONN = "default/snowflake/1700000000"
DB, SCH = f"{CONN}/DB", f"{CONN}/DB/SCH"
ORDERS, USERS = f"{SCH}/ORDERS", f"{SCH}/USERS"
WHO = "dana.lee@example.com"


def estate(minutes: float = 0) -> list[dict[str, Any]]:
    return [
        ev("d1", DB, minutes, type_name="Database"),
        ev("s1", SCH, minutes, type_name="Schema", attributes={"parent_qualified_name": DB}),
        ev("t1", ORDERS, minutes, attributes={
            "parent_qualified_name": SCH, "description": f"orders, ask {WHO}",
            "owner_users": [WHO, "bob"], "sample_email": WHO}),
        ev("t2", USERS, minutes, attributes={"parent_qualified_name": SCH,
                                             "description": "users", "owner_users": ["bob"]}),
        ev("c1", f"{ORDERS}/ID", minutes, type_name="Column",
           attributes={"parent_qualified_name": ORDERS, "data_type": "NUMBER"}),
    ]  # fmt: skip


@pytest.fixture
def hub(atlan_emulator: AtlanEmulator, tmp_path: Path, sealed: Ciphers) -> AtlanHub:
    options = AtlanOptions(
        base_url=atlan_emulator.base_url,
        api_key=atlan_emulator.api_key,
        bulk_size=50,
        rate_per_min=None,
        retries=1,
        backoff_s=0.01,
    )
    made = AtlanHub(options, tmp_path / "ledger", ciphers=sealed)
    made.upsert("acme", frame(estate()))
    return made


def in_atlan(emulator: AtlanEmulator) -> dict[str, dict[str, Any]]:
    return {e["attributes"]["qualifiedName"]: e for e in emulator.entities()}


def test_ledger_files_hold_no_content_its_reads_do(
    hub: AtlanHub, atlan_emulator: AtlanEmulator, tmp_path: Path
) -> None:
    ledger = hub.read_store()
    assert WHO in dumps(list(ledger.export("acme")))
    assert WHO in dumps(ledger.changes("acme", 0, 100).to_dicts())
    assert in_atlan(atlan_emulator)[ORDERS]["attributes"]["ownerUsers"] == ["bob", WHO]
    assert files_holding(tmp_path / "ledger", WHO, "orders, ask") == {}
    # An update, published from the sealed ledger, reaches Atlan as plaintext.
    update = ev(
        "t3", USERS, 1, attributes={"parent_qualified_name": SCH, "description": "all users"}
    )
    hub.upsert("acme", frame([update]))
    assert in_atlan(atlan_emulator)[USERS]["attributes"]["description"] == "all users"


def test_erasure_scrubs_the_ledger_and_updates_atlan(
    hub: AtlanHub, atlan_emulator: AtlanEmulator
) -> None:
    guid = in_atlan(atlan_emulator)[ORDERS]["guid"]
    last = hub.last_change("acme")
    sent = atlan_emulator.stats()["bulk_entities_received"]
    planned = hub.erase_subject("acme", Subject(WHO.upper()), dry_run=True)
    assert planned.records_changed == [ORDERS]
    assert atlan_emulator.stats()["bulk_entities_received"] == sent  # a dry run sends nothing
    assert hub.erase_subject("acme", Subject(WHO)) == planned
    orders = in_atlan(atlan_emulator)[ORDERS]
    assert orders["guid"] == guid  # updated in place
    assert orders["attributes"]["ownerUsers"] == ["bob"]
    assert orders["attributes"]["description"] == "orders, ask [erased]"
    assert WHO not in dumps(atlan_emulator.entities())
    assert WHO not in dumps(list(hub.read_store().export("acme")))
    assert WHO not in dumps(hub.changes("acme", 0, 100).to_dicts())
    assert hub.changes("acme", last, 10).get_column("change").to_list() == ["updated"]
    # Done: a second erasure finds nothing and sends nothing.
    sent = atlan_emulator.stats()["bulk_entities_received"]
    assert hub.erase_subject("acme", Subject(WHO)) == HubErasure()
    assert atlan_emulator.stats()["bulk_entities_received"] == sent


def test_purge_deletes_the_assets_from_atlan_and_recreates_them_scrubbed(
    hub: AtlanHub, atlan_emulator: AtlanEmulator
) -> None:
    before = in_atlan(atlan_emulator)
    erasure = hub.erase_subject("acme", Subject(WHO), purge=True)
    assert erasure.records_changed == [ORDERS]
    after = in_atlan(atlan_emulator)
    assert set(after) == set(before)
    assert after[ORDERS]["guid"] != before[ORDERS]["guid"]  # a new asset, no history
    assert after[ORDERS]["status"] == "ACTIVE"
    assert after[ORDERS]["attributes"]["ownerUsers"] == ["bob"]
    assert after[USERS]["guid"] == before[USERS]["guid"]  # the others untouched
    assert WHO not in dumps(atlan_emulator.entities())
    # The ledger knows the new asset: a later change updates it, creating nothing.
    result = hub.upsert("acme", frame([ev("t9", ORDERS, 5, attributes={
        "parent_qualified_name": SCH, "description": "orders"})]))  # fmt: skip
    assert (result.created, result.updated) == (0, 1)
    assert in_atlan(atlan_emulator)[ORDERS]["guid"] == after[ORDERS]["guid"]


def test_atlan_down_during_an_erasure_the_next_publish_delivers_it(
    hub: AtlanHub, atlan_emulator: AtlanEmulator
) -> None:
    atlan_emulator.fault(503, count=50, path_prefix="/api/meta/entity/bulk")
    with pytest.raises(AtlanUnavailableError):
        hub.erase_subject("acme", Subject(WHO))
    assert WHO not in dumps(list(hub.read_store().export("acme")))  # the ledger is done
    atlan_emulator.fault(None, count=0)
    hub.publish("acme")
    assert in_atlan(atlan_emulator)[ORDERS]["attributes"]["ownerUsers"] == ["bob"]
    assert WHO not in dumps(atlan_emulator.entities())
