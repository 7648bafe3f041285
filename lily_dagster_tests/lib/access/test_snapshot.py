"""The access API's snapshot of a tenant: read once, then only what changed; never waiting
for a writer once it has something to answer from; always what the hub exports."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lily_dagster.lib.access.snapshot import HubBusyError, SnapshotStore
from lily_dagster.lib.hub.local import LocalHub
from lily_dagster_tests.support.envelopes import ev
from lily_dagster_tests.support.frames import frame

SCHEMA = "default/snowflake/1/DB/SCH"


def _names(store: SnapshotStore, tenant: str = "acme") -> list[str]:
    return store.get(tenant).records["qualified_name"].to_list()


def _export(hub: LocalHub) -> list[dict[str, Any]]:
    return sorted(hub.export("acme"), key=lambda r: r["qualified_name"])


def _snapshot_export(store: SnapshotStore) -> list[dict[str, Any]]:
    from lily_dagster.lib.hub.base import record_to_export

    return [record_to_export(r) for r in store.get("acme").records.iter_rows(named=True)]


def _hold_write_lock(db: Path) -> subprocess.Popen[bytes]:
    script = (
        "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); "
        "print('locked', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(db)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"locked"
    return proc


def test_a_snapshot_follows_every_kind_of_change(tmp_path: Path) -> None:
    hub = LocalHub(tmp_path)
    store = SnapshotStore(hub)
    assert _names(store) == []  # a tenant with no data yet
    hub.upsert("acme", frame([ev(f"e{i}", f"{SCHEMA}/T{i}", i) for i in range(5)]))
    assert _snapshot_export(store) == _export(hub)
    hub.upsert(
        "acme",
        frame(
            [
                ev("u1", f"{SCHEMA}/T1", 10, attributes={"description": "new"}),
                ev("d2", f"{SCHEMA}/T2", 11, op="delete"),
                ev("n9", f"{SCHEMA}/T9", 12),
            ]
        ),
    )
    snap = store.get("acme")
    assert snap.seq == hub.last_change("acme")
    assert _snapshot_export(store) == _export(hub)
    assert snap.records["qualified_name"].is_sorted()


def test_a_snapshot_is_read_again_whole_after_the_hub_is_reset(tmp_path: Path) -> None:
    hub = LocalHub(tmp_path)
    store = SnapshotStore(hub)
    hub.upsert("acme", frame([ev(f"e{i}", f"{SCHEMA}/T{i}", i) for i in range(3)]))
    assert len(_names(store)) == 3
    hub.path("acme").unlink()
    hub.upsert("acme", frame([ev("x", f"{SCHEMA}/OTHER", 1)]))
    assert _names(store) == [f"{SCHEMA}/OTHER"]


def test_a_writer_holding_the_file_never_makes_a_read_wait(tmp_path: Path) -> None:
    hub = LocalHub(tmp_path)
    store = SnapshotStore(hub, first_read_wait_s=0.5)
    hub.upsert("acme", frame([ev("e1", f"{SCHEMA}/T1", 1)]))
    assert len(_names(store)) == 1
    hub.upsert("acme", frame([ev("e2", f"{SCHEMA}/T2", 2)]))  # the snapshot is now behind
    holder = _hold_write_lock(hub.path("acme"))
    try:
        started = time.monotonic()
        assert _names(store) == [f"{SCHEMA}/T1"]  # answered from the snapshot as it is
        assert time.monotonic() - started < 0.3
    finally:
        holder.kill()
        holder.wait()
    assert len(_names(store)) == 2  # caught up once the writer let go


def test_a_first_read_waits_for_a_writer_only_so_long(tmp_path: Path) -> None:
    hub = LocalHub(tmp_path)
    hub.upsert("globex", frame([ev("g1", f"{SCHEMA}/G1", 1, tenant="globex")]))
    store = SnapshotStore(hub, first_read_wait_s=0.5)
    holder = _hold_write_lock(hub.path("globex"))
    try:
        with pytest.raises(HubBusyError, match="globex"):
            store.get("globex")
    finally:
        holder.kill()
        holder.wait()
    assert len(_names(store, "globex")) == 1


def test_only_the_tenants_read_lately_are_held_in_memory(tmp_path: Path) -> None:
    hub = LocalHub(tmp_path)
    tenants = [f"t{i}" for i in range(5)]
    for tenant in tenants:
        hub.upsert(tenant, frame([ev(f"{tenant}-1", f"{SCHEMA}/T", 1, tenant=tenant)]))
    store = SnapshotStore(hub, max_tenants=3)
    for tenant in tenants:
        assert _names(store, tenant) == [f"{SCHEMA}/T"]
    assert store.held() == ["t2", "t3", "t4"]
    _names(store, "t2")  # read again: now the most recent
    _names(store, "t0")  # dropped earlier: read again from the hub, t3 goes
    assert store.held() == ["t4", "t2", "t0"]
