"""Contract tests of AtlanHub that hold for any Atlan: run against the emulator always, and
against a real tenant when ATLAN_BASE_URL, ATLAN_API_KEY and LILY_ATLAN_TEST_CONNECTION
(the qualified name of a connection there that the key may write under) are set; skipped
otherwise, with that reason. Everything is read back through pyatlan, not the emulator's
own view, and a real tenant is cleaned up (purged) afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lily_dagster.lib.hub.atlan import AtlanHub, AtlanOptions
from lily_dagster_tests.support.envelopes import ev
from lily_dagster_tests.support.frames import frame

REAL_TENANT_VARS = ("ATLAN_BASE_URL", "ATLAN_API_KEY", "LILY_ATLAN_TEST_CONNECTION")


@dataclass
class Target:
    hub: AtlanHub
    connection: str  # qualified name of the connection the test writes under

    def read(self, qualified_name: str, type_name: str) -> Any:
        """The asset as pyatlan reads it back (None when absent)."""
        from pyatlan.errors import NotFoundError
        from pyatlan.model import assets

        try:
            return self.hub.transport.client.asset.get_by_qualified_name(
                qualified_name=qualified_name,
                asset_type=getattr(assets, type_name),
                min_ext_info=True,
                ignore_relationships=False,
            )
        except NotFoundError:
            return None


@pytest.fixture(params=["emulator", "real-tenant"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "emulator":
        emulator = request.getfixturevalue("atlan_emulator")
        options = AtlanOptions(
            base_url=emulator.base_url, api_key=emulator.api_key, rate_per_min=None, backoff_s=0.01
        )
        yield Target(AtlanHub(options, tmp_path / "ledger"), "default/snowflake/1700000000")
        return
    missing = [v for v in REAL_TENANT_VARS if not os.environ.get(v)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not set: the Atlan contract runs on the emulator only")
    hub = AtlanHub(AtlanOptions.from_env(), tmp_path / "ledger")
    target = Target(hub, os.environ["LILY_ATLAN_TEST_CONNECTION"])
    yield target
    created = [g for g in _guids(hub) if g]
    if created:
        hub.transport.client.asset.purge_by_guid(created)


def _guids(hub: AtlanHub) -> list[str]:
    with hub._ledger("acme") as con:
        return [row[0] for row in con.execute("SELECT guid FROM published").fetchall()]


def names(connection: str) -> dict[str, str]:
    run = uuid.uuid4().hex[:8].upper()
    db = f"{connection}/LILY_TEST_{run}"
    return {"db": db, "schema": f"{db}/SCH", "table": f"{db}/SCH/ORDERS"}


def estate(n: dict[str, str], minutes: float = 0, description: str = "orders") -> list[Any]:
    return [
        ev("c", f"{n['table']}/EMAIL", minutes, type_name="Column",
           attributes={"parent_qualified_name": n["table"], "data_type": "VARCHAR", "order": 1}),
        ev("t", n["table"], minutes,
           attributes={"parent_qualified_name": n["schema"], "description": description}),
        ev("s", n["schema"], minutes, type_name="Schema",
           attributes={"parent_qualified_name": n["db"]}),
        ev("d", n["db"], minutes, type_name="Database"),
    ]  # fmt: skip


def test_estate_is_created_parents_first_and_reads_back(target: Target) -> None:
    n = names(target.connection)
    result = target.hub.upsert("acme", frame(estate(n)))
    assert (result.created, result.pending, result.rejects) == (4, 0, None)
    column = target.read(f"{n['table']}/EMAIL", "Column")
    assert column is not None and column.table_qualified_name == n["table"]
    assert column.data_type == "VARCHAR" and column.order == 1
    table = target.read(n["table"], "Table")
    assert table.description == "orders" and table.schema_qualified_name == n["schema"]


def test_update_archive_restore_read_back(target: Target) -> None:
    n = names(target.connection)
    target.hub.upsert("acme", frame(estate(n)))
    assert target.hub.upsert("acme", frame(estate(n, 5, "all orders"))).updated == 1
    assert target.read(n["table"], "Table").description == "all orders"
    assert target.hub.upsert("acme", frame([ev("del", n["table"], 9, "delete")])).archived == 1
    assert str(getattr(target.read(n["table"], "Table").status, "value", "")) == "DELETED"
    assert target.hub.upsert("acme", frame(estate(n, 20))).restored == 1
    assert str(getattr(target.read(n["table"], "Table").status, "value", "")) == "ACTIVE"


def test_refused_entity_is_quarantined_with_atlans_error(target: Target) -> None:
    n = names(target.connection)
    bad = ev("bad", f"{n['db']}/NOPE", 0, type_name="NoSuchAtlanType")
    result = target.hub.upsert("acme", frame([*estate(n), bad]))
    assert result.created == 4 and result.rejects is not None
    assert result.rejects.get_column("reason").to_list() == ["hub_refused"]


def test_listing_through_pyatlan_search_shows_the_estate(target: Target) -> None:
    n = names(target.connection)
    target.hub.upsert("acme", frame(estate(n)))
    listed = set(target.hub.listing("acme").get_column("qualified_name").to_list())
    assert {n["db"], n["schema"], n["table"], f"{n['table']}/EMAIL"} <= listed
