"""The hub's content as a user sees it in either hub, and with `LILY_HUB=atlan` in Atlan
itself (the emulator, read over HTTP: its admin listing and Atlan's typedefs API)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from lily_dagster_tests.contract import outside
from lily_dagster_tests.contract.conftest import EMULATOR_KEY, Scenario, Scenarios, Snapshot
from lily_dagster_tests.contract.workload import (
    NOT_PII_COLUMNS,
    PII_COLUMNS,
    TENANTS,
    column_qn,
    process_qn,
    table_qn,
)


@pytest.fixture(scope="module")
def atlan(scenarios: Scenarios) -> Scenario:
    return scenarios.get("atlan")


def _in_atlan(scenario: Scenario, snapshot: Snapshot | None = None) -> dict[str, dict[str, Any]]:
    entities = (snapshot or scenario.after1).atlan
    assert entities is not None
    by_name: dict[str, dict[str, Any]] = {}
    for entity in entities:
        by_name[entity["attributes"]["qualifiedName"]] = entity
    return by_name


def test_pii_columns_are_classified_pii_by_default(scenario: Scenario) -> None:
    """No hook is configured: the default chain classifies personal data by column name."""
    for tenant in TENANTS:
        hub = scenario.hub_by_name(tenant)
        for table, columns in (("CUSTOMERS", PII_COLUMNS), ("ORDERS", NOT_PII_COLUMNS)):
            for column in columns:
                record = hub[column_qn(tenant, table, column)]
                is_pii = "PII" in record["classifications"]
                assert is_pii == (column in PII_COLUMNS), (column, record["classifications"])
        assert "PII" not in hub[column_qn(tenant, "ORDERS", "AMOUNT")]["classifications"]


def test_every_hub_record_exists_in_atlan_with_its_status(atlan: Scenario) -> None:
    """After each run: deleted ones included (never restored, never seen active, and the
    active columns of a deleted table)."""
    wrong = []
    for run, snapshot in (("run 1", atlan.after1), ("run 2", atlan.after2)):
        entities = _in_atlan(atlan, snapshot)
        for tenant in TENANTS:
            for record in atlan.hub_records(tenant, snapshot):
                entity = entities.get(record["qualified_name"])
                got = None if entity is None else (entity["typeName"], entity.get("status"))
                if got != (record["type_name"], record["status"]):
                    wrong.append((run, record["qualified_name"], record["status"], got))
    assert not wrong, f"{len(wrong)} records not in Atlan as in the hub: {wrong[:6]}"


def test_a_deleted_table_is_archived_in_atlan_and_its_active_columns_are_there(
    atlan: Scenario,
) -> None:
    entities = _in_atlan(atlan)
    for tenant in TENANTS:
        legacy = table_qn(tenant, "LEGACY_ORDERS")
        assert entities.get(legacy, {}).get("status") == "DELETED", legacy
        for column in ("OLD_ID", "OLD_AMOUNT"):
            qn = column_qn(tenant, "LEGACY_ORDERS", column)
            assert entities.get(qn, {}).get("status") == "ACTIVE", qn


def test_atlan_holds_nothing_that_is_not_a_hub_record(atlan: Scenario) -> None:
    hub = {r["qualified_name"] for t in TENANTS for r in atlan.hub_records(t)}
    extra = sorted(set(_in_atlan(atlan)) - hub)
    assert not extra, extra[:10]


def test_atlan_has_the_latest_descriptions_and_lineage(atlan: Scenario) -> None:
    entities = _in_atlan(atlan)
    for tenant in TENANTS:
        hub = atlan.hub_by_name(tenant)
        for qn in (table_qn(tenant, "ORDERS"), table_qn(tenant, "CUSTOMERS")):
            want = hub[qn]["attributes"]["description"]
            assert entities[qn]["attributes"].get("description") == want, qn
        process = entities[process_qn(tenant)]["attributes"]
        for side in ("inputs", "outputs"):
            names = sorted(ref["uniqueAttributes"]["qualifiedName"] for ref in process[side])
            assert names == sorted(hub[process_qn(tenant)][side]), (tenant, side)


def test_pii_classification_reaches_atlan_as_its_tag(atlan: Scenario) -> None:
    assert atlan.atlan_url is not None
    typedefs = httpx.get(
        f"{atlan.atlan_url}/api/meta/types/typedefs",
        params={"type": "classification"},
        headers={"Authorization": f"Bearer {EMULATOR_KEY}"},
        timeout=30,
    )
    typedefs.raise_for_status()
    display = {t["name"]: t["displayName"] for t in typedefs.json()["classificationDefs"]}
    entities = _in_atlan(atlan)
    for tenant in TENANTS:
        for column in PII_COLUMNS:
            entity = entities[column_qn(tenant, "CUSTOMERS", column)]
            tags = {display.get(c["typeName"]) for c in entity.get("classifications", [])}
            assert "PII" in tags, (column, tags)


def test_the_read_api_answers_from_lily_s_ledger_without_asking_atlan(atlan: Scenario) -> None:
    """With LILY_HUB=atlan, `GET /v1/tenants/{t}/assets` reads what Lily wrote: every hub
    export record, as exported, and not one request reaches Atlan for it."""
    assert atlan.atlan_url is not None
    tenant = TENANTS[0]
    token = outside.token(atlan.env, tenant, "lily:read lily:read:pii")
    stats = f"{atlan.atlan_url}/_emulator/stats"
    before = httpx.get(stats, timeout=10).json()["requests"]
    listed: dict[str, dict[str, Any]] = {}
    cursor = None
    while True:
        answer = httpx.get(
            f"{atlan.webhook_url}/v1/tenants/{tenant}/assets",
            params={"limit": 1000, **({"cursor": cursor} if cursor else {})},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        listed.update({r["qualified_name"]: r for r in answer.json()["assets"]})
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            break
    assert httpx.get(stats, timeout=10).json()["requests"] == before
    exported = {r["qualified_name"]: r for r in outside.hub_export(atlan.env, tenant)}
    assert exported and {n: listed.get(n) for n in exported} == exported
