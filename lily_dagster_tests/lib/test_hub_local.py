"""LocalHub and the merge semantics of CONTRACT.md §1: one record per (tenant, qualified_name),
latest (event_time, event_id) wins, deletes are soft, and the order of events never matters."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from lily_dagster.lib.demo import expected_hub_state
from lily_dagster.lib.envelope import decode_envelopes, empty_events
from lily_dagster.lib.hub.base import UpsertResult, hub_factory
from lily_dagster.lib.hub.local import HubLockedError, LocalHub
from lily_dagster_tests.support.envelopes import T0, at, encode, envelope, ev
from lily_dagster_tests.support.frames import frame

EXPORT_KEYS = {
    "qualified_name",
    "type_name",
    "name",
    "status",
    "attributes",
    "classifications",
    "event_time",
    "event_id",
    "updated_at",
}


def apply(hub: LocalHub, envelopes: list[dict[str, Any]], tenant: str = "acme") -> UpsertResult:
    return hub.upsert(tenant, frame(envelopes))


def state(hub: LocalHub, tenant: str = "acme") -> dict[str, dict[str, Any]]:
    """Export keyed by qualified name, without updated_at."""
    return {
        r["qualified_name"]: {k: v for k, v in r.items() if k != "updated_at"}
        for r in hub.export(tenant)
    }


def full_export(hub: LocalHub, tenant: str = "acme") -> list[dict[str, Any]]:
    return list(hub.export(tenant))


@pytest.fixture
def hub(tmp_path: Path) -> LocalHub:
    return LocalHub(tmp_path / "hub")


# --- last writer wins -------------------------------------------------------------------------


def test_registered_as_local_backend(tmp_path: Path) -> None:
    made = hub_factory("local")(tmp_path)
    assert isinstance(made, LocalHub)
    with pytest.raises(ValueError):
        hub_factory("nope")


@pytest.mark.parametrize("split", [True, False], ids=["separate-batches", "one-batch"])
def test_latest_event_time_wins_whatever_the_arrival_order(hub: LocalHub, split: bool) -> None:
    old = ev("z-old", "db/t", 1, attributes={"description": "old"}, classifications=["PII"])
    new = ev("a-new", "db/t", 2, attributes={"description": "new"})
    if split:
        apply(hub, [new])
        apply(hub, [old])
    else:
        apply(hub, [new, old])
    record = state(hub)["db/t"]
    assert record["event_id"] == "a-new"  # time beats id: "z-old" > "a-new" but is older
    assert record["event_time"] == at(2)
    assert record["attributes"] == {"description": "new"}
    assert record["classifications"] == []
    assert record["status"] == "ACTIVE"


@pytest.mark.parametrize("order", ["ab", "ba", "one-batch-ab", "one-batch-ba"])
def test_equal_event_time_larger_event_id_wins(hub: LocalHub, order: str) -> None:
    a = ev("evt-a", "db/t", 5, attributes={"description": "from a"})
    b = ev("evt-b", "db/t", 5, attributes={"description": "from b"})
    if order == "ab":
        apply(hub, [a])
        apply(hub, [b])
    elif order == "ba":
        apply(hub, [b])
        apply(hub, [a])
    elif order == "one-batch-ab":
        apply(hub, [a, b])
    else:
        apply(hub, [b, a])
    record = state(hub)["db/t"]
    assert record["event_id"] == "evt-b"
    assert record["attributes"] == {"description": "from b"}


@pytest.mark.parametrize("order", ["upsert-first", "delete-first"])
def test_equal_event_time_tie_between_delete_and_upsert(hub: LocalHub, order: str) -> None:
    upsert = ev("evt-2", "db/t", 5, attributes={"description": "kept"})
    delete = ev("evt-1", "db/t", 5, "delete")
    batches = [[upsert], [delete]] if order == "upsert-first" else [[delete], [upsert]]
    for b in batches:
        apply(hub, b)
    assert state(hub)["db/t"]["status"] == "ACTIVE"  # evt-2 > evt-1

    other = LocalHub(hub.root.parent / "other")
    upsert2 = ev("evt-1", "db/t", 5, attributes={"description": "kept"})
    delete2 = ev("evt-2", "db/t", 5, "delete")
    for b in [[upsert2], [delete2]] if order == "upsert-first" else [[delete2], [upsert2]]:
        apply(other, b)
    record = state(other)["db/t"]
    assert record["status"] == "DELETED"
    assert record["event_id"] == "evt-2"
    assert record["attributes"] == {"description": "kept"}


# --- soft deletes -----------------------------------------------------------------------------


def test_delete_soft_deletes_and_keeps_the_latest_upsert_content(hub: LocalHub) -> None:
    apply(
        hub,
        [
            ev(
                "e1",
                "db/t",
                1,
                name="ORDERS",
                attributes={"description": "orders", "owner_users": ["jdoe"], "rows": 10},
                classifications=["PII"],
            )
        ],
    )
    # the delete carries other content; it must not replace the record's content
    apply(hub, [ev("e2", "db/t", 2, "delete", name="gone", attributes={"description": "x"})])
    record = state(hub)["db/t"]
    assert record == {
        "qualified_name": "db/t",
        "type_name": "Table",
        "name": "ORDERS",
        "status": "DELETED",
        "attributes": {"description": "orders", "owner_users": ["jdoe"], "rows": 10},
        "classifications": ["PII"],
        "event_time": at(2),
        "event_id": "e2",
    }
    assert hub.status_counts("acme") == {"DELETED": 1}


def test_later_upsert_restores_active(hub: LocalHub) -> None:
    apply(hub, [ev("e1", "db/t", 1, attributes={"description": "v1"})])
    apply(hub, [ev("e2", "db/t", 2, "delete")])
    result = apply(hub, [ev("e3", "db/t", 3, attributes={"description": "v3"})])
    assert result.restored == 1
    record = state(hub)["db/t"]
    assert record["status"] == "ACTIVE"
    assert record["event_id"] == "e3"
    assert record["attributes"] == {"description": "v3"}


def test_an_upsert_reports_the_hub_it_left_as_later_reads_see_it(hub: LocalHub) -> None:
    first = apply(hub, [ev("e1", "db/t", 1), ev("e2", "db/u", 1)])
    second = apply(hub, [ev("e3", "db/t", 2, "delete")])
    assert first.state is not None and second.state is not None
    assert first.state.status_counts == {"ACTIVE": 2}
    assert second.state.status_counts == hub.status_counts("acme") == {"ACTIVE": 1, "DELETED": 1}
    assert second.state.last_change == hub.last_change("acme") > first.state.last_change > 0


def test_older_upsert_after_a_delete_does_not_restore(hub: LocalHub) -> None:
    apply(hub, [ev("e1", "db/t", 1, attributes={"description": "v1"})])
    apply(hub, [ev("e3", "db/t", 3, "delete")])
    apply(hub, [ev("e2", "db/t", 2, attributes={"description": "v2"})])  # late, but older
    record = state(hub)["db/t"]
    assert record["status"] == "DELETED"
    assert record["event_id"] == "e3"
    # content is that of the latest upsert, whenever it arrived
    assert record["attributes"] == {"description": "v2"}


def test_delete_of_an_unseen_asset_creates_a_deleted_record(hub: LocalHub) -> None:
    result = apply(hub, [ev("d1", "db/ghost", 4, "delete", type_name="View", name="GHOST")])
    assert result == UpsertResult(created=1)
    assert state(hub)["db/ghost"] == {
        "qualified_name": "db/ghost",
        "type_name": "View",
        "name": "GHOST",
        "status": "DELETED",
        "attributes": {},
        "classifications": [],
        "event_time": at(4),
        "event_id": "d1",
    }
    # an older upsert arriving later gives the record content but does not revive it
    apply(hub, [ev("u1", "db/ghost", 1, type_name="View", name="Ghost", classifications=["X"])])
    record = state(hub)["db/ghost"]
    assert (record["status"], record["event_id"], record["name"]) == ("DELETED", "d1", "Ghost")
    assert record["classifications"] == ["X"]


# --- order independence -----------------------------------------------------------------------

QNS = {
    "default/sf/DB/SCH/ORDERS": "Table",
    "default/sf/DB/SCH/ORDERS/EMAIL": "Column",
    "default/dbt/orders_daily": "Process",
    "default/sf/DB/SCH/CUSTOMERS": "Table",
    "default/sf/DB/SCH/ONLY_DELETES": "View",
}


def event_set() -> list[dict[str, Any]]:
    """~30 events over a few assets: upserts and deletes, many equal timestamps, ids that do
    not follow time, one asset that only ever sees deletes, and one event sent twice."""
    rng = random.Random(20261123)
    ids = [f"01J{n:04d}" for n in rng.sample(range(10_000), 40)]
    owners = [None, [], ["alice"], ["alice", "bob"], ["carol"]]
    out: list[dict[str, Any]] = []
    for i in range(30):
        qn = list(QNS)[i % len(QNS)]
        type_name = QNS[qn]
        op = "delete" if type_name == "View" or rng.random() < 0.3 else "upsert"
        attributes: dict[str, Any] = {"description": f"rev {i}", "rev": i}
        owner = owners[rng.randrange(len(owners))]
        if owner is not None:
            attributes["owner_users"] = owner
        if rng.random() < 0.3:
            attributes["certificate_status"] = rng.choice(["VERIFIED", "DRAFT"])
        lineage: dict[str, Any] = {}
        if type_name == "Process":
            lineage = {
                "inputs": [f"default/sf/DB/SCH/IN_{i}"],
                "outputs": ["default/sf/DB/SCH/ORDERS"] if i % 2 else [],
            }
        out.append(
            ev(
                ids[i],
                qn,
                rng.choice([0, 1, 2, 3]),  # four distinct times: ties are common
                op,
                type_name=type_name,
                name=f"{qn.rsplit('/', 1)[-1]}-{i}",
                attributes=attributes,
                classifications=sorted(rng.sample(["PII", "GDPR", "GOLD"], rng.randrange(3))),
                **lineage,
            )
        )
    out.append(json.loads(json.dumps(out[7])))  # an exact duplicate
    return out


def random_batches(rng: random.Random, events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    shuffled = events[:]
    rng.shuffle(shuffled)
    cuts = sorted(rng.sample(range(1, len(shuffled)), rng.randrange(0, 6)))
    bounds = [0, *cuts, len(shuffled)]
    return [shuffled[a:b] for a, b in itertools.pairwise(bounds)]


def test_event_set_has_the_interesting_cases() -> None:
    events = event_set()
    ops = {e["op"] for e in events}
    assert ops == {"upsert", "delete"}
    keys = [(e["asset"]["qualified_name"], e["event_time"]) for e in events]
    assert len(keys) - len(set(keys)) >= 5  # several equal (qualified_name, event_time)
    expected = expected_hub_state(events)["acme"]
    assert set(expected) == set(QNS)
    assert {r["status"] for r in expected.values()} == {"ACTIVE", "DELETED"}


def test_order_independence(tmp_path: Path) -> None:
    events = event_set()
    expected = expected_hub_state(events)["acme"]
    rng = random.Random(7)
    first: dict[str, dict[str, Any]] | None = None
    for trial in range(12):
        hub = LocalHub(tmp_path / f"hub-{trial}")
        batches = random_batches(rng, events)
        for batch in batches:
            apply(hub, batch)
        got = state(hub)
        assert got == expected, f"trial {trial}: batches of {[len(b) for b in batches]}"
        if first is None:
            first = got
        assert got == first
        if trial % 3 == 0:
            # everything again, in another order: nothing at all changes
            before = full_export(hub)
            for batch in random_batches(rng, events):
                assert apply(hub, batch).changed == 0
            assert full_export(hub) == before


def test_one_batch_equals_one_event_per_batch(tmp_path: Path) -> None:
    events = event_set()
    whole = LocalHub(tmp_path / "whole")
    apply(whole, events)
    single = LocalHub(tmp_path / "single")
    for e in reversed(events):
        apply(single, [e])
    assert state(whole) == state(single) == expected_hub_state(events)["acme"]


def test_owners_reach_the_hub_normalised(hub: LocalHub) -> None:
    envelopes = [ev("e1", "db/t", 1, attributes={"owner_users": [" Bob", "alice", "BOB"]})]
    apply(hub, envelopes)
    assert state(hub)["db/t"]["attributes"]["owner_users"] == ["alice", "bob"]
    assert state(hub) == expected_hub_state(envelopes)["acme"]


# --- change counts, replays -------------------------------------------------------------------


def test_upsert_result_counts(hub: LocalHub) -> None:
    first = [
        ev("a1", "db/a", 1, attributes={"description": "a"}),
        ev("b1", "db/b", 1),
        ev("c1", "db/c", 1, "delete"),
    ]
    assert apply(hub, first) == UpsertResult(created=3)
    assert hub.status_counts("acme") == {"ACTIVE": 2, "DELETED": 1}

    second = [
        ev("a2", "db/a", 2, attributes={"description": "a, edited"}),
        ev("b2", "db/b", 2, "delete"),
        ev("c2", "db/c", 2),
        ev("d2", "db/d", 2),
    ]
    result = apply(hub, second)
    assert result == UpsertResult(created=1, updated=1, archived=1, restored=1)
    assert result.changed == 4
    assert result.as_dict() == {
        "created": 1,
        "updated": 1,
        "archived": 1,
        "restored": 1,
        "unchanged": 0,
        "pending": 0,
    }
    assert hub.status_counts("acme") == {"ACTIVE": 3, "DELETED": 1}

    assert apply(hub, second) == UpsertResult(unchanged=4)
    # stale events: older than what the hub holds
    stale = [ev("a0", "db/a", 0, attributes={"description": "ancient"}), ev("b0", "db/b", 0)]
    assert apply(hub, stale) == UpsertResult(unchanged=2)
    assert state(hub)["db/a"]["attributes"] == {"description": "a, edited"}


def test_several_events_of_one_asset_in_a_batch_count_once(hub: LocalHub) -> None:
    batch = [ev(f"e{i}", "db/t", i, attributes={"description": str(i)}) for i in range(5)]
    assert apply(hub, batch) == UpsertResult(created=1)
    assert state(hub)["db/t"]["attributes"] == {"description": "4"}


def test_empty_batch(hub: LocalHub) -> None:
    assert hub.upsert("acme", empty_events()) == UpsertResult()
    assert list(hub.export("acme")) == []


def test_replaying_a_batch_changes_nothing_not_even_updated_at(hub: LocalHub) -> None:
    batch = frame(
        [
            ev("e1", "db/a", 1),
            ev("e2", "db/b", 1, "delete"),
            ev("e3", "db/a", 2, attributes={"description": "d"}),
        ]
    )
    hub.upsert("acme", batch, now=T0 + timedelta(hours=1))
    before = full_export(hub)
    versions = hub.records("acme").select("qualified_name", "version").rows()
    assert {r["updated_at"] for r in before} == {at(60)}
    result = hub.upsert("acme", batch, now=T0 + timedelta(hours=2))
    assert result == UpsertResult(unchanged=2)
    assert full_export(hub) == before
    assert hub.records("acme").select("qualified_name", "version").rows() == versions


def test_a_change_moves_updated_at_and_version(hub: LocalHub) -> None:
    hub.upsert("acme", frame([ev("e1", "db/a", 1)]), now=T0 + timedelta(hours=1))
    hub.upsert("acme", frame([ev("e2", "db/a", 2, name="renamed")]), now=T0 + timedelta(hours=2))
    record = next(iter(hub.export("acme")))
    assert record["updated_at"] == at(120)
    assert record["name"] == "renamed"
    assert hub.records("acme")["version"].to_list() == [2]


# --- export shape, lineage, tenants ---------------------------------------------------------


def test_export_record_shape(hub: LocalHub) -> None:
    apply(
        hub,
        [
            ev(
                "e1",
                "db/t/c",
                1,
                type_name="Column",
                attributes={
                    "description": "d",
                    "owner_groups": ["eng"],
                    "parent_qualified_name": "db/t",
                    "data_type": "VARCHAR",
                },
                classifications=["PII"],
            )
        ],
    )
    (record,) = list(hub.export("acme"))
    assert set(record) == EXPORT_KEYS
    assert record["attributes"] == {
        "description": "d",
        "owner_groups": ["eng"],
        "parent_qualified_name": "db/t",
        "data_type": "VARCHAR",
    }
    assert record["event_time"] == "2026-11-23T10:01:00Z"
    assert record["updated_at"].endswith("Z")


def test_process_records_export_inputs_and_outputs(hub: LocalHub) -> None:
    apply(
        hub,
        [
            ev(
                "p1",
                "dbt/proc",
                1,
                type_name="Process",
                inputs=["db/a", "db/b"],
                outputs=["db/c"],
            ),
            ev("p2", "dbt/empty", 1, type_name="Process"),
            ev("t1", "db/a", 1),
        ],
    )
    records = {r["qualified_name"]: r for r in hub.export("acme")}
    assert records["dbt/proc"]["inputs"] == ["db/a", "db/b"]
    assert records["dbt/proc"]["outputs"] == ["db/c"]
    assert set(records["dbt/proc"]) == EXPORT_KEYS | {"inputs", "outputs"}
    assert (records["dbt/empty"]["inputs"], records["dbt/empty"]["outputs"]) == ([], [])
    assert "inputs" not in records["db/a"]
    # lineage follows the latest upsert
    apply(hub, [ev("p3", "dbt/proc", 2, type_name="Process", inputs=["db/z"], outputs=[])])
    records = {r["qualified_name"]: r for r in hub.export("acme")}
    assert (records["dbt/proc"]["inputs"], records["dbt/proc"]["outputs"]) == (["db/z"], [])


def test_tenants_are_isolated(hub: LocalHub) -> None:
    apply(hub, [ev("e1", "db/t", 1, attributes={"description": "acme's"})], tenant="acme")
    apply(
        hub,
        [
            ev("e1", "db/t", 0, "delete", tenant="globex"),
            ev("e2", "db/only-globex", 0, tenant="globex"),
        ],
        tenant="globex",
    )
    assert hub.tenants() == ["acme", "globex"]
    acme, globex = state(hub, "acme"), state(hub, "globex")
    assert set(acme) == {"db/t"}
    assert set(globex) == {"db/t", "db/only-globex"}
    assert acme["db/t"]["status"] == "ACTIVE"
    assert acme["db/t"]["attributes"] == {"description": "acme's"}
    assert globex["db/t"]["status"] == "DELETED"
    assert hub.status_counts("globex") == {"ACTIVE": 1, "DELETED": 1}
    assert list(hub.export("initech")) == []
    assert hub.status_counts("initech") == {}
    assert hub.tenants() == ["acme", "globex"]  # reading a tenant does not create it


def _hold_lock(db: Path, seconds: float) -> subprocess.Popen[bytes]:
    """Another process holding the tenant database's write lock for `seconds`."""
    script = (
        "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); "
        "print('locked', flush=True); time.sleep(float(sys.argv[2]))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(db), str(seconds)], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"locked"
    return proc


def test_writer_waits_for_a_lock_held_by_another_process(tmp_path: Path) -> None:
    hub = LocalHub(tmp_path, lock_timeout_s=30)
    hub.upsert("acme", _lock_events("e1"))
    holder = _hold_lock(hub.path("acme"), 1.5)
    started = time.monotonic()
    result = hub.upsert("acme", _lock_events("e2", "2026-11-23T11:00:00Z"))
    holder.wait(10)
    assert time.monotonic() - started >= 0.5  # it really waited for the lock
    assert result.updated == 1


def test_writer_gives_up_with_a_clear_error_when_the_lock_is_never_released(tmp_path: Path) -> None:
    hub = LocalHub(tmp_path, lock_timeout_s=0.5)
    hub.upsert("acme", _lock_events("e1"))
    holder = _hold_lock(hub.path("acme"), 5)
    try:
        with pytest.raises(HubLockedError, match="locked"):
            hub.upsert("acme", _lock_events("e2", "2026-11-23T11:00:00Z"))
    finally:
        holder.kill()
        holder.wait(10)
    assert [r["event_id"] for r in hub.export("acme")] == ["e1"]


def _lock_events(event_id: str, when: str = "2026-11-23T10:00:00Z") -> pl.DataFrame:
    attributes = {"description": event_id}
    env = envelope(
        "default/db/T", event_id=event_id, source="dbt", event_time=when, attributes=attributes
    )
    return decode_envelopes([encode(env)], ["o"], tenant="acme", max_event_bytes=1 << 20).events
