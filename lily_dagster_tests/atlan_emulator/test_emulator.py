"""The Atlan emulator through pyatlan's real AtlanClient over HTTP, as Lily uses it: saves and
reads, updates, archive and restore, bulk paging, Atlas's refusals, tags through the tag cache,
and pyatlan's behaviour under injected 429s, 503s, a revoked key and a rate limit.

pyatlan is imported inside the tests: importing it takes seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from atlan_emulator import API_KEY_ENV, DEFAULT_API_KEY

from lily_dagster.lib.broker import free_port
from lily_dagster_tests.conftest import AtlanEmulator, start_atlan_emulator, stop_atlan_emulator

if TYPE_CHECKING:
    from pyatlan.client.atlan import AtlanClient
    from pyatlan.model.assets import Asset

CONN = "default/snowflake/1700000000"
DB = f"{CONN}/DB"
SCH = f"{DB}/SCH"
ORDERS = f"{SCH}/ORDERS"
RETRIED_STATUSES = [429, 500, 502, 503, 504]
METHODS = ["HEAD", "GET", "OPTIONS", "POST", "PUT", "DELETE"]


def make_client(
    emulator: AtlanEmulator, api_key: str | None = None, statuses: list[int] | None = None
) -> AtlanClient:
    from httpx_retries import Retry
    from pyatlan.client.atlan import AtlanClient

    retry = Retry(
        total=3,
        backoff_factor=0.01,
        status_forcelist=RETRIED_STATUSES if statuses is None else statuses,
        allowed_methods=METHODS,
        respect_retry_after_header=True,
    )
    return AtlanClient(base_url=emulator.base_url, api_key=api_key or emulator.api_key, retry=retry)


@pytest.fixture
def atlan(atlan_emulator: AtlanEmulator) -> AtlanClient:
    return make_client(atlan_emulator)


def parents() -> list[Asset]:
    from pyatlan.model.assets import Database, Schema

    return [
        Database.creator(name="DB", connection_qualified_name=CONN),
        Schema.creator(name="SCH", database_qualified_name=DB),
    ]


def table(name: str = "ORDERS") -> Asset:
    from pyatlan.model.assets import Table

    return Table.creator(name=name, schema_qualified_name=SCH)


def by_qn(emulator: AtlanEmulator) -> dict[str, dict[str, Any]]:
    return {e["attributes"]["qualifiedName"]: e for e in emulator.entities()}


def test_saved_assets_read_back_by_guid_and_qualified_name(
    atlan: AtlanClient, atlan_emulator: AtlanEmulator
) -> None:
    from pyatlan.model.assets import Column, Process, Table
    from pyatlan.model.enums import EntityStatus

    orders = table()
    column = Column.creator(name="ID", parent_type=Table, parent_qualified_name=ORDERS, order=3)
    process = Process.creator(
        name="load",
        connection_qualified_name=CONN,
        process_id="load",
        inputs=[Table.ref_by_qualified_name(ORDERS)],
        outputs=[Column.ref_by_qualified_name(f"{ORDERS}/ID")],
    )
    sent = [*parents(), orders, column, process]
    # Children before their parents: references resolve within the request.
    response = atlan.asset.save(list(reversed(sent)))

    created = response.mutated_entities.CREATE if response.mutated_entities else None
    assert sorted(a.type_name for a in created or []) == sorted(
        ["Database", "Schema", "Table", "Column", "Process"]
    )
    assert response.guid_assignments is not None
    assert set(response.guid_assignments) == {a.guid for a in sent}
    guid = response.guid_assignments[orders.guid]

    got = atlan.asset.get_by_guid(guid, asset_type=Table)
    assert (got.qualified_name, got.name, got.schema_qualified_name) == (ORDERS, "ORDERS", SCH)
    assert got.status == EntityStatus.ACTIVE and got.create_time and got.update_time
    by_name = atlan.asset.get_by_qualified_name(ORDERS, Table)
    assert by_name.guid == guid
    col = atlan.asset.get_by_qualified_name(f"{ORDERS}/ID", Column, ignore_relationships=False)
    assert col.order == 3 and col.table is not None
    assert col.table.guid == guid and col.table.unique_attributes == {"qualifiedName": ORDERS}
    lineage = atlan.asset.get_by_qualified_name(f"{CONN}/load", Process, ignore_relationships=False)
    assert [i.guid for i in lineage.inputs or []] == [guid]

    stored = by_qn(atlan_emulator)
    assert len(stored) == 5
    assert stored[f"{ORDERS}/ID"]["attributes"]["table"]["guid"] == guid


def test_update_is_listed_and_an_unchanged_save_is_not(
    atlan: AtlanClient, atlan_emulator: AtlanEmulator
) -> None:
    from pyatlan.model.assets import Table

    guid = atlan.asset.save([*parents(), table()]).assets_created(Table)[0].guid
    change = Table.updater(qualified_name=ORDERS, name="ORDERS")
    change.description = "all orders"
    updated = atlan.asset.save(change)
    assert [a.guid for a in updated.assets_updated(Table)] == [guid]
    assert atlan.asset.get_by_guid(guid, asset_type=Table).description == "all orders"
    version = by_qn(atlan_emulator)[ORDERS]["version"]

    again = atlan.asset.save(change)
    assert again.assets_updated(Table) == [] and again.assets_created(Table) == []
    assert again.guid_assignments == {change.guid: guid}
    assert by_qn(atlan_emulator)[ORDERS]["version"] == version


def test_soft_delete_restore_by_saving_again_and_hard_delete(
    atlan: AtlanClient, atlan_emulator: AtlanEmulator
) -> None:
    from pyatlan.errors import NotFoundError
    from pyatlan.model.assets import Asset, Table
    from pyatlan.model.enums import AtlanDeleteType, EntityStatus
    from pyatlan.model.fluent_search import FluentSearch

    guid = atlan.asset.save([*parents(), table()]).assets_created(Table)[0].guid
    created_at = atlan.asset.get_by_guid(guid, asset_type=Table).create_time
    deleted = atlan.asset.delete_by_guid(guid)
    assert [a.guid for a in deleted.assets_deleted(Table)] == [guid]
    assert atlan.asset.get_by_guid(guid, asset_type=Table).status == EntityStatus.DELETED
    active = FluentSearch().select().where(Asset.TYPE_NAME.eq("Table")).execute(atlan)
    assert [a.guid for a in active] == []

    restored = atlan.asset.save(Table.updater(qualified_name=ORDERS, name="ORDERS"))
    assert [a.status for a in restored.assets_updated(Table)] == [EntityStatus.ACTIVE]
    back = atlan.asset.get_by_guid(guid, asset_type=Table)
    assert back.status == EntityStatus.ACTIVE and back.create_time == created_at

    purged = atlan.asset.purge_by_guid(guid, delete_type=AtlanDeleteType.HARD)
    assert [a.guid for a in purged.assets_deleted(Table)] == [guid]
    with pytest.raises(NotFoundError, match=guid):
        atlan.asset.get_by_guid(guid, asset_type=Table)
    assert ORDERS not in by_qn(atlan_emulator)


def test_archiving_a_table_archives_its_columns_and_restoring_it_does_not_restore_them(
    atlan: AtlanClient, atlan_emulator: AtlanEmulator
) -> None:
    """Atlan's table_columns is a composite relationship: its columns go with the table."""
    from pyatlan.model.assets import Column, Table
    from pyatlan.model.enums import EntityStatus

    columns = [
        Column.creator(name=n, parent_type=Table, parent_qualified_name=ORDERS, order=i)
        for i, n in enumerate(["ID", "EMAIL"])
    ]
    saved = atlan.asset.save([*parents(), table(), table("OTHER"), *columns])
    guid = saved.assets_created(Table)[0].guid
    if atlan.asset.get_by_guid(guid, asset_type=Table).name != "ORDERS":
        guid = saved.assets_created(Table)[1].guid
    deleted = atlan.asset.delete_by_guid(guid)
    # The response lists what the operation archived: the table and its two columns.
    assert sorted(a.qualified_name for a in deleted.assets_deleted(Column)) == [
        f"{ORDERS}/EMAIL",
        f"{ORDERS}/ID",
    ]
    stored = by_qn(atlan_emulator)
    assert {q: e["status"] for q, e in stored.items() if q.startswith(ORDERS)} == {
        ORDERS: "DELETED",
        f"{ORDERS}/EMAIL": "DELETED",
        f"{ORDERS}/ID": "DELETED",
    }
    assert stored[f"{SCH}/OTHER"]["status"] == "ACTIVE" and stored[SCH]["status"] == "ACTIVE"
    atlan.asset.save(Table.updater(qualified_name=ORDERS, name="ORDERS"))
    restored = atlan.asset.get_by_guid(guid, asset_type=Table)
    assert restored.status == EntityStatus.ACTIVE
    assert by_qn(atlan_emulator)[f"{ORDERS}/ID"]["status"] == "DELETED"


def test_bulk_and_offset_paging_return_every_asset_once(
    atlan: AtlanClient, atlan_emulator: AtlanEmulator
) -> None:
    from pyatlan.model.assets import Asset
    from pyatlan.model.fluent_search import FluentSearch
    from pyatlan.model.search import DSL, IndexSearchRequest, Term

    atlan.asset.save(parents())
    # 4 requests: 4 creation timestamps, 625 assets sharing each, so some pages of 100 hold
    # one timestamp and some straddle two.
    for batch in range(4):
        atlan.asset.save([table(f"T{batch}_{i:03}") for i in range(625)])
    sent: list[dict[str, Any]] = []

    def capture(request: httpx.Request) -> None:
        if request.url.path.endswith("/search/indexsearch"):
            sent.append(json.loads(request.content)["dsl"])

    atlan._session.event_hooks["request"].append(capture)
    search = (
        FluentSearch()
        .where(Asset.TYPE_NAME.eq("Table"))
        .where(Asset.QUALIFIED_NAME.startswith(f"{SCH}/"))
        .page_size(100)
    )
    pages: dict[bool, list[dict[str, Any]]] = {}
    for bulk in (True, False):
        sent.clear()
        results = search.execute(atlan, bulk=bulk)
        assert results.count == 2500
        guids = [a.guid for a in results]
        assert len(guids) == len(set(guids)) == 2500
        pages[bulk] = list(sent)
    # client.asset.search with a bare (non-bool) query: pyatlan wraps it for timestamp paging.
    criteria = IndexSearchRequest(dsl=DSL(query=Term.with_type_name("Table"), size=100))
    guids = [a.guid for a in atlan.asset.search(criteria, bulk=True)]
    assert len(guids) == len(set(guids)) == 2500

    # Bulk paging sorts by creation time, then guid; it filters on the last creation time
    # seen when a page's first and last times differ, and pages by offset (from = assets
    # seen) when they tie. Both paths ran. Plain paging only moves `from` by the page size.
    bulk_pages = pages[True]
    assert all(list(p["sort"][0]) == ["__timestamp"] for p in bulk_pages)
    assert all(p["sort"][-1] == {"__guid": {"order": "asc"}} for p in bulk_pages)
    timestamp_filters = [
        f["range"]["__timestamp"]
        for p in bulk_pages
        for f in p["query"]["bool"].get("filter", [])
        if "range" in f
    ]
    assert timestamp_filters and all(set(r) == {"gte"} for r in timestamp_filters)
    assert any(p["from"] > 0 for p in bulk_pages)
    assert [p["from"] for p in pages[False]] == list(range(0, 2600, 100))


def test_column_whose_table_does_not_exist_is_refused_and_nothing_is_written(
    atlan: AtlanClient, atlan_emulator: AtlanEmulator
) -> None:
    from pyatlan.errors import NotFoundError
    from pyatlan.model.assets import Column, Table

    atlan.asset.save(parents())
    missing = f"{SCH}/NO_SUCH_TABLE"
    orphan = Column.creator(name="ID", parent_type=Table, parent_qualified_name=missing, order=1)
    with pytest.raises(NotFoundError, match=missing) as refused:
        atlan.asset.save([table(), orphan])
    assert "ATLAS-404-00-00A" in str(refused.value)
    assert set(by_qn(atlan_emulator)) == {DB, SCH}  # the valid table was not written either


def test_unknown_entity_type_is_refused(atlan: AtlanClient, atlan_emulator: AtlanEmulator) -> None:
    from pyatlan.errors import InvalidRequestError
    from pyatlan.model.assets import Asset
    from pyatlan.model.assets.core.indistinct_asset import IndistinctAsset

    unknown = IndistinctAsset(
        type_name="NoSuchAtlanType",
        attributes=Asset.Attributes(qualified_name=f"{CONN}/x", name="x"),
    )
    with pytest.raises(InvalidRequestError, match="NoSuchAtlanType"):
        atlan.asset.save(unknown)
    assert atlan_emulator.entities() == []


def test_tags_resolve_through_the_tag_cache_and_land_on_entities(
    atlan_emulator: AtlanEmulator,
) -> None:
    from pyatlan.model.assets import Asset, Table
    from pyatlan.model.core import AtlanTag, AtlanTagName
    from pyatlan.model.fluent_search import CompoundQuery, FluentSearch

    atlan_emulator.add_tags(["Lily:custom"])
    atlan = make_client(atlan_emulator)  # a fresh tag cache, which sees the new tag
    pii = atlan.atlan_tag_cache.get_id_for_name("PII")
    custom = atlan.atlan_tag_cache.get_id_for_name("Lily:custom")
    assert pii and custom and len(pii) == 22 and pii.isalpha() and pii != custom
    assert atlan.atlan_tag_cache.get_id_for_name("GDPR:personal-data")

    orders = table()
    orders.atlan_tags = [AtlanTag.of(AtlanTagName("PII"))]
    guid = atlan.asset.save([*parents(), orders]).assets_created(Table)[0].guid
    got = atlan.asset.get_by_guid(guid, asset_type=Table)
    assert [str(t.type_name) for t in got.atlan_tags or []] == ["PII"]
    assert [c["typeName"] for c in by_qn(atlan_emulator)[ORDERS]["classifications"]] == [pii]

    tagged = (
        FluentSearch()
        .where(Asset.TYPE_NAME.eq("Table"))
        .where(CompoundQuery.tagged(client=atlan, with_one_of=["PII"], directly=True))
        .execute(atlan)
    )
    assert [a.guid for a in tagged] == [guid]


def test_429_with_retry_after_is_retried_by_pyatlan(
    atlan: AtlanClient, atlan_emulator: AtlanEmulator
) -> None:
    atlan_emulator.fault(429, count=1, retry_after=1, path_prefix="/api/meta/entity/bulk")
    started = time.monotonic()
    atlan.asset.save(parents())
    assert time.monotonic() - started >= 1  # pyatlan waited as Retry-After asked
    stats = atlan_emulator.stats()
    assert stats["status_counts"]["429"] == 1 and stats["entities"] == 2


def test_503_past_the_retry_budget_surfaces_as_a_type_error(
    atlan: AtlanClient, atlan_emulator: AtlanEmulator
) -> None:
    # pyatlan returns None for a 503 that outlasts its retries; its callers then fail with
    # TypeError (AssetMutationResponse(**None)), not with an AtlanError.
    atlan_emulator.fault(503, count=10, path_prefix="/api/meta/entity/bulk")
    with pytest.raises(TypeError, match="must be a mapping, not NoneType"):
        atlan.asset.save(parents())
    assert atlan_emulator.stats()["status_counts"]["503"] == 4  # 1 try + 3 retries
    assert atlan_emulator.entities() == []
    atlan_emulator.fault(None, count=0)  # clear the rest
    atlan.asset.save(parents())
    assert len(atlan_emulator.entities()) == 2


def test_wrong_key_and_revoked_key_fail_with_pyatlans_auth_errors(
    atlan: AtlanClient, atlan_emulator: AtlanEmulator
) -> None:
    from pyatlan.client.atlan import AtlanClient
    from pyatlan.errors import AuthenticationError, PermissionError

    with pytest.raises(AuthenticationError, match="ATLAS-401"):
        make_client(atlan_emulator, api_key="not-the-key").asset.get_by_guid("x")
    atlan_emulator.revoke_key()
    started = time.monotonic()
    with pytest.raises(PermissionError, match="revoked"):
        atlan.asset.save(parents())
    assert time.monotonic() - started < 1  # 403 is not retried by this Retry
    # pyatlan's own default Retry retries 403: Retry-After: 1 keeps that to about 5 s.
    default = AtlanClient(base_url=atlan_emulator.base_url, api_key=atlan_emulator.api_key)
    started = time.monotonic()
    with pytest.raises(PermissionError):
        default.asset.get_by_guid("x")
    assert 4 <= time.monotonic() - started < 10
    assert atlan_emulator.entities() == []


def test_rate_limit_answers_429_and_counts_them(
    atlan_emulator: AtlanEmulator,
) -> None:
    from pyatlan.errors import RateLimitError
    from pyatlan.model.assets import Asset
    from pyatlan.model.fluent_search import FluentSearch

    atlan = make_client(atlan_emulator, statuses=[500, 502, 503, 504])  # 429 not retried
    atlan_emulator.rate_limit(3)
    search = FluentSearch().where(Asset.TYPE_NAME.eq("Table"))
    for _ in range(3):
        assert search.count(atlan) == 0
    with pytest.raises(RateLimitError, match="3 requests per minute"):
        search.count(atlan)
    raw = httpx.get(
        f"{atlan_emulator.base_url}/api/meta/types/typedefs",
        headers={"Authorization": f"Bearer {atlan_emulator.api_key}"},
    )
    assert raw.status_code == 429 and 1 <= int(raw.headers["Retry-After"]) <= 60
    assert atlan_emulator.stats()["status_counts"]["429"] == 2
    atlan_emulator.rate_limit(None)
    assert search.count(atlan) == 0


def test_concurrent_saves_all_land_once(atlan: AtlanClient, atlan_emulator: AtlanEmulator) -> None:
    atlan.asset.save(parents())

    def save(worker: int) -> None:
        for i in range(10):
            atlan.asset.save([table(f"W{worker}_{i}"), table("SHARED")])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(save, range(8)))
    stored = atlan_emulator.entities()
    names = [e["attributes"]["qualifiedName"] for e in stored]
    assert len(names) == len(set(names)) == 2 + 80 + 1


def test_raw_refusals_and_delays_have_atlas_shapes(atlan_emulator: AtlanEmulator) -> None:
    url = f"{atlan_emulator.base_url}/api/meta/entity/bulk/"
    auth = {"Authorization": f"Bearer {atlan_emulator.api_key}"}
    no_name = {"entities": [{"typeName": "Table", "attributes": {"qualifiedName": ORDERS}}]}
    refused = httpx.post(url, json=no_name, headers=auth)
    assert refused.status_code == 400
    assert refused.json()["errorCode"] == "ATLAS-400-00-02B"
    unauthenticated = httpx.post(url, json=no_name)
    assert unauthenticated.status_code == 401
    assert set(unauthenticated.json()) == {"errorCode", "errorMessage"}
    atlan_emulator.fault(None, count=1, delay_s=0.3)
    started = time.monotonic()
    slow = httpx.get(f"{atlan_emulator.base_url}/api/meta/entity/guid/nope", headers=auth)
    assert slow.status_code == 404 and time.monotonic() - started >= 0.3
    assert slow.json()["errorCode"] == "ATLAS-404-00-005"


def test_state_file_survives_a_restart_and_the_env_key_applies(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ("--state", str(tmp_path / "atlan.duckdb"))
    env = {**os.environ, API_KEY_ENV: "env-key"}
    auth = {"Authorization": "Bearer env-key"}
    entity = {"typeName": "Table", "attributes": {"qualifiedName": ORDERS, "name": "ORDERS"}}

    first = start_atlan_emulator(port, tmp_path / "emulator.log", *args, env=env)
    try:
        saved = httpx.post(
            f"{base}/api/meta/entity/bulk", json={"entities": [entity]}, headers=auth
        )
    finally:
        stop_atlan_emulator(first)
    assert saved.status_code == 200, saved.text
    (header,) = saved.json()["mutatedEntities"]["CREATE"]

    second = start_atlan_emulator(port, tmp_path / "emulator.log", *args, env=env)
    try:
        got = httpx.get(f"{base}/api/meta/entity/guid/{header['guid']}", headers=auth)
        default_key = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
        refused = httpx.get(f"{base}/api/meta/types/typedefs", headers=default_key)
    finally:
        stop_atlan_emulator(second)
    assert got.status_code == 200 and got.json()["entity"]["attributes"]["name"] == "ORDERS"
    assert refused.status_code == 401


def test_its_own_command_serves_without_lily(tmp_path: Path) -> None:
    """`atlan-emulator` (the lily-atlan-emulator distribution's command) takes the flags of
    `lily atlan-emulator`, serves the same API and stops on SIGTERM."""
    port = free_port()
    command = Path(sys.executable).with_name("atlan-emulator")
    log = tmp_path / "emulator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(command), "--port", str(port), "--api-key", "own-key"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                answer = httpx.get(
                    f"http://127.0.0.1:{port}/api/meta/types/typedefs",
                    headers={"Authorization": "Bearer own-key"},
                )
                break
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        stop_atlan_emulator(proc)
    assert answer.status_code == 200
    assert proc.returncode in (0, -signal.SIGTERM)
    assert f"Atlan emulator on http://127.0.0.1:{port} (API key: --api-key" in log.read_text()


def test_lily_atlan_emulator_without_the_package_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lily_dagster.cli import main

    monkeypatch.setitem(sys.modules, "atlan_emulator", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "atlan_emulator.cli", None)
    assert main(["atlan-emulator", "--port", str(free_port())]) == 2
    assert capsys.readouterr().err == (
        "lily atlan-emulator needs the lily-atlan-emulator package: "
        "pip install -e tools/atlan-emulator\n"
    )
