"""A tick with more tenants than LILY_RUN_MAX_TENANTS: one run per block of tenant partitions,
each tenant in exactly one run, every tenant's partition status as if one run had taken all."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, RunRequest, SensorResult

from lily_dagster.defs.ingest.sensors import (
    MULTI_TENANT_TAG,
    TENANT_BLOCK_TAG,
    kafka_events_sensor,
    tenant_blocks,
)
from lily_dagster.lib.broker import produce
from lily_dagster.lib.demo import generate_demo
from lily_dagster.lib.hub.local import LocalHub
from lily_dagster_tests import sensor_harness as harness
from lily_dagster_tests.defs.conftest import InstanceFactory
from lily_dagster_tests.support.sealed import ciphers_at

TENANTS = ("t0", "t1", "t2", "t3", "t4")


def test_blocks_are_runs_of_consecutive_partitions_in_the_partitions_order() -> None:
    order = ["b", "a", "d", "c", "e"]
    assert tenant_blocks(["e", "a", "c", "b"], order, 2) == {0: ["b", "a"], 1: ["c"], 2: ["e"]}
    assert tenant_blocks(["e", "a"], order, 50) == {0: ["a", "e"]}


def test_a_tick_over_the_bound_runs_each_block_once_and_every_partition_is_right(
    lily_home: Path,
    kafka_bootstrap: str,
    topic: str,
    monkeypatch: pytest.MonkeyPatch,
    dagster_storage: InstanceFactory,
) -> None:
    monkeypatch.setenv("LILY_RUN_MAX_TENANTS", "2")
    traffic = generate_demo(tenants=TENANTS, tables_per_tenant=2, columns_per_table=2, seed=5)
    produce(kafka_bootstrap, topic, traffic.messages)
    with dagster_storage() as instance:
        # The partitions exist already, in this order: blocks are [t0 t1] [t2 t3] [t4].
        instance.add_dynamic_partitions("tenants", list(TENANTS))
        result = harness.tick(kafka_events_sensor, instance, None)
        assert isinstance(result, SensorResult)
        requests = [r for r in result.run_requests or [] if isinstance(r, RunRequest)]
        assert [harness.tenants_of(r) for r in requests] == [["t0", "t1"], ["t2", "t3"], ["t4"]]
        assert [r.tags[TENANT_BLOCK_TAG] for r in requests] == ["0", "1", "2"]
        assert MULTI_TENANT_TAG not in requests[2].tags  # one tenant: its own partition
        for request in requests:
            harness.execute(instance, request)
        expected = traffic.expected_state()
        hub = LocalHub(lily_home / "hub", ciphers=ciphers_at(lily_home))
        for tenant in TENANTS:
            records = {r["qualified_name"]: r for r in hub.export(tenant)}
            assert {
                k: {f: v for f, v in r.items() if f != "updated_at"} for k, r in records.items()
            } == expected[tenant]
        # Each tenant's partition materialised once per asset, checked once: no run's range
        # reached into another block.
        for asset in ("landed_events", "validated_events", "enriched_events", "hub_records"):
            stored = instance.fetch_materializations(AssetKey(asset), limit=100).records
            counts = Counter(r.partition_key for r in stored)
            assert counts == dict.fromkeys(TENANTS, 1), asset
        check = AssetCheckKey(AssetKey("validated_events"), "validation_rules")
        infos = instance.event_log_storage.get_asset_check_partition_info([check])
        assert {i.partition_key: i.latest_execution_status.value for i in infos} == dict.fromkeys(
            TENANTS, "SUCCEEDED"
        )
