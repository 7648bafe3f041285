"""`erase_subject` with LILY_HUB=atlan, against the Atlan emulator over HTTP: the assets
holding the subject are updated in Atlan (same GUID: Atlan's history keeps the old values),
and with `purge` they are purged and created again, scrubbed (a new GUID: the history went
with the purge)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lily_dagster.lib.gdpr.erase import erase_subject
from lily_dagster.lib.hub import open_hub
from lily_dagster.settings import Settings
from lily_dagster_tests.conftest import AtlanEmulator
from lily_dagster_tests.support.envelopes import ev
from lily_dagster_tests.support.frames import frame

CONN = "default/snowflake/1700000000"
DB, SCH = f"{CONN}/DB", f"{CONN}/DB/SCH"
ORDERS, USERS = f"{SCH}/ORDERS", f"{SCH}/USERS"


@pytest.fixture
def settings(
    atlan_emulator: AtlanEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    for name, value in {
        "LILY_HOME": str(tmp_path / "lily"),
        "LILY_HUB": "atlan",
        "ATLAN_BASE_URL": atlan_emulator.base_url,
        "ATLAN_API_KEY": atlan_emulator.api_key,
        "LILY_ATLAN_RATE_PER_MIN": "0",
        "LILY_ATLAN_BACKOFF_S": "0.01",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LILY_CONFIG", raising=False)
    settings = Settings.from_env()
    estate = [
        ev("d1", DB, 0, type_name="Database"),
        ev("s1", SCH, 0, type_name="Schema", attributes={"parent_qualified_name": DB}),
        ev("t1", ORDERS, 0, attributes={"parent_qualified_name": SCH, "description": "by jdoe"}),
        ev("t2", USERS, 0, attributes={"parent_qualified_name": SCH, "owner_users": ["JRoe", "x"]}),
    ]
    result = open_hub(settings).upsert("acme", frame(estate))
    assert result.created == 4
    return settings


def in_atlan(emulator: AtlanEmulator) -> dict[str, dict[str, Any]]:
    return {
        e["attributes"]["qualifiedName"]: e
        for e in emulator.entities()
        if e.get("status") == "ACTIVE"
    }


def test_an_erasure_updates_the_asset_in_atlan(
    settings: Settings, atlan_emulator: AtlanEmulator
) -> None:
    guid = in_atlan(atlan_emulator)[ORDERS]["guid"]
    summary = erase_subject(settings, "acme", "JDOE")
    assert summary.records == [ORDERS]
    orders = in_atlan(atlan_emulator)[ORDERS]
    assert orders["attributes"]["description"] == "by [erased]" and orders["guid"] == guid
    assert erase_subject(settings, "acme", "jdoe").records == []


def test_a_purge_recreates_the_asset_without_its_history(
    settings: Settings, atlan_emulator: AtlanEmulator
) -> None:
    before = in_atlan(atlan_emulator)
    summary = erase_subject(settings, "acme", "jroe", purge=True)
    assert summary.records == [USERS]
    after = in_atlan(atlan_emulator)
    assert after[USERS]["attributes"]["ownerUsers"] == ["x"]
    assert after[USERS]["guid"] != before[USERS]["guid"]  # purged, then created again
    assert after[ORDERS]["guid"] == before[ORDERS]["guid"]  # the others untouched
    purged = [e for e in atlan_emulator.entities() if e["guid"] == before[USERS]["guid"]]
    assert purged == []  # gone for good, history and all
