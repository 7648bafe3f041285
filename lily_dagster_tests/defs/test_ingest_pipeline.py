"""End to end through a real broker and a real Dagster instance: sensor ticks and runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    DagsterRunStatus,
    RunRequest,
    SensorResult,
    SkipReason,
)
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.test_utils import create_run_for_test
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from lily_dagster.defs.ingest import sensors
from lily_dagster.defs.ingest.sensors import kafka_events_sensor
from lily_dagster.lib.broker import produce
from lily_dagster.lib.demo import DemoTraffic, generate_demo
from lily_dagster.lib.hub.local import LocalHub
from lily_dagster.lib.kafka_source import parse_cursor
from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster.lib.staging import StagingArea
from lily_dagster.settings import UNROUTED_TENANT
from lily_dagster_tests import sensor_harness as harness
from lily_dagster_tests.defs.conftest import InstanceFactory
from lily_dagster_tests.support.envelopes import table_messages
from lily_dagster_tests.support.sealed import ciphers_at

TENANTS = ("acme", "globex", "initech")


def tick(instance: DagsterInstance, cursor: str | None) -> SensorResult | SkipReason:
    return harness.tick(kafka_events_sensor, instance, cursor)


def drain(instance: DagsterInstance, cursor: str | None) -> tuple[str | None, list[RunRequest]]:
    return harness.drain(kafka_events_sensor, instance, cursor)


def hub_state(home: Path, tenant: str) -> dict[str, dict[str, Any]]:
    return {
        r["qualified_name"]: r
        for r in LocalHub(home / "hub", ciphers=ciphers_at(home)).export(tenant)
    }


def without_updated_at(state: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: {f: v for f, v in r.items() if f != "updated_at"} for k, r in state.items()}


def quarantined(home: Path, tenant: str) -> list[tuple[str, str]]:
    frame = QuarantineStore(home / "quarantine", ciphers_at(home)).read(tenant)
    return sorted(
        zip(frame.get_column("raw").to_list(), frame.get_column("reason").to_list(), strict=True)
    )


@pytest.fixture
def demo_traffic(kafka_bootstrap: str, topic: str) -> DemoTraffic:
    traffic = generate_demo(tenants=TENANTS, tables_per_tenant=4, columns_per_table=3, seed=11)
    produce(kafka_bootstrap, topic, traffic.messages)
    return traffic


def test_three_tenants_end_to_end_match_contract_and_replay_changes_nothing(
    lily_home: Path,
    demo_traffic: DemoTraffic,
    monkeypatch: pytest.MonkeyPatch,
    dagster_storage: InstanceFactory,
) -> None:
    with dagster_storage() as instance:
        cursor, runs = drain(instance, None)
        # One run per tick for every tenant with new events.
        assert [set(harness.tenants_of(r)) for r in runs] == [set(TENANTS)]
        assert all(r.partition_key is None for r in runs)
        assert set(instance.get_dynamic_partitions("tenants")) == set(TENANTS)
        expected = demo_traffic.expected_state()
        expected_q = demo_traffic.expected_quarantine()
        for tenant in TENANTS:
            assert without_updated_at(hub_state(lily_home, tenant)) == expected[tenant]
            assert quarantined(lily_home, tenant) == expected_q[tenant]
        assert quarantined(lily_home, UNROUTED_TENANT) == expected_q[UNROUTED_TENANT]
        # Every event produced is accounted for: applied to the hub or quarantined.
        offsets = sum(o for parts in parse_cursor(cursor).values() for o in parts.values())
        assert offsets == len(demo_traffic.messages)

        before = {t: hub_state(lily_home, t) for t in TENANTS}
        before_q = {t: quarantined(lily_home, t) for t in (*TENANTS, UNROUTED_TENANT)}
        # Replay the whole topic from offset 0 in smaller batches (other batch ids, so the
        # runs really process every event again): nothing in the hub or quarantine changes.
        monkeypatch.setenv("LILY_MAX_BATCH_EVENTS", "40")
        _, replay_runs = drain(instance, None)
        assert len(replay_runs) > len(runs)
        assert {t: hub_state(lily_home, t) for t in TENANTS} == before
        assert {t: quarantined(lily_home, t) for t in (*TENANTS, UNROUTED_TENANT)} == before_q


def test_replayed_tick_requests_the_same_runs_and_processes_nothing_twice(
    lily_home: Path, demo_traffic: DemoTraffic, dagster_storage: InstanceFactory
) -> None:
    with dagster_storage() as instance:
        first = tick(instance, None)
        again = tick(instance, None)  # the tick replayed: its cursor was never saved
        assert isinstance(first, SensorResult) and isinstance(again, SensorResult)
        keys = sorted(r.run_key or "" for r in first.run_requests or [])
        assert keys and keys == sorted(r.run_key or "" for r in again.run_requests or [])
        instance.add_dynamic_partitions("tenants", list(TENANTS))
        for request in first.run_requests or []:
            harness.execute(instance, request)
        for request in again.run_requests or []:
            harness.execute(instance, request)  # forced through despite the run key: a no-op
        event = instance.get_latest_materialization_event(AssetKey("landed_events"))
        assert event is not None and event.asset_materialization is not None
        assert event.asset_materialization.metadata["events_in"].value == 0


def test_materialisations_report_counts_lag_and_latency(
    lily_home: Path, demo_traffic: DemoTraffic, dagster_storage: InstanceFactory
) -> None:
    with dagster_storage() as instance:
        drain(instance, None)
        for tenant in TENANTS:
            validated = _metadata(instance, "validated_events", tenant)
            hub = _metadata(instance, "hub_records", tenant)
            landed = _metadata(instance, "landed_events", tenant)
            valid_sent = sum(1 for e in demo_traffic.valid if e["tenant"] == tenant)
            assert validated["valid"] == valid_sent
            assert validated["quarantined"] == len(demo_traffic.expected_quarantine()[tenant])
            assert landed["events_in"] == validated["valid"] + validated["quarantined"]
            assert landed["kafka_lag"] == 0
            assert hub["events_applied"] == valid_sent
            assert hub["upserted"] == len(demo_traffic.expected_state()[tenant])
            # Freshness is Lily's own delay (landing → hub); the demo dates its events an hour
            # back, which shows in the events' age, not in the freshness.
            assert 0 <= hub["freshness_p50_s"] <= hub["freshness_p95_s"] < 120
            assert 3000 < hub["event_age_p50_s"] <= hub["event_age_p95_s"] < 7200
            assert hub["freshness_p95_s"] == round(hub["freshness_p95_s"], 2)


def _metadata(instance: DagsterInstance, asset: str, tenant: str) -> dict[str, Any]:
    records = instance.fetch_materializations(AssetKey(asset), limit=1000).records
    for record in reversed(records):  # newest last after reversing the default order
        mat = record.asset_materialization
        if mat is not None and mat.partition == tenant:
            return {k: v.value for k, v in mat.metadata.items()}
    raise AssertionError(f"no materialisation of {asset} for {tenant}")


def test_bounded_batches_advance_the_cursor_tick_by_tick(
    lily_home: Path,
    demo_traffic: DemoTraffic,
    monkeypatch: pytest.MonkeyPatch,
    dagster_storage: InstanceFactory,
) -> None:
    monkeypatch.setenv("LILY_MAX_BATCH_EVENTS", "25")
    with dagster_storage() as instance:
        result = tick(instance, None)
        assert isinstance(result, SensorResult) and result.cursor
        consumed = sum(o for p in parse_cursor(result.cursor).values() for o in p.values())
        assert consumed == 25
        second = tick(instance, result.cursor)
        assert isinstance(second, SensorResult) and second.cursor
        assert sum(o for p in parse_cursor(second.cursor).values() for o in p.values()) == 50


def test_broker_down_skips_the_tick_and_keeps_the_cursor(
    lily_home: Path, monkeypatch: pytest.MonkeyPatch, dagster_storage: InstanceFactory
) -> None:
    from lily_dagster.lib.broker import free_port

    monkeypatch.setenv("LILY_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")
    cursor = json.dumps({"lily.metadata.events": {"0": 7}})
    with dagster_storage() as instance:
        result = tick(instance, cursor)
    assert isinstance(result, SkipReason)
    assert "unreachable" in (result.skip_message or "")
    assert not (lily_home / "staging").exists()


def test_topic_bound_to_a_tenant_quarantines_other_tenants_events(
    lily_home: Path,
    kafka_bootstrap: str,
    topic: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    dagster_storage: InstanceFactory,
) -> None:
    config = tmp_path / "lily.yaml"
    config.write_text(f"tenants:\n  - name: acme\n    kafka_topics: [{topic}]\n")
    monkeypatch.setenv("LILY_CONFIG", str(config))
    good = generate_demo(tenants=("acme",), tables_per_tenant=1, columns_per_table=1).valid[0]
    foreign = dict(good, event_id="foreign-1", tenant="globex")
    produce(
        kafka_bootstrap,
        topic,
        [(None, json.dumps(good).encode()), (None, json.dumps(foreign).encode()), (None, b"{oops")],
    )
    with dagster_storage() as instance:
        drain(instance, None)
    reasons = sorted(reason for _, reason in quarantined(lily_home, "acme"))
    assert reasons == ["malformed_json", "tenant_mismatch"]
    assert list(hub_state(lily_home, "acme")) == [good["asset"]["qualified_name"]]
    assert hub_state(lily_home, "globex") == {}


# --- coalescing: one queued run per tenant takes every batch landed meanwhile ---------------


def _queue(instance: DagsterInstance, request: RunRequest, status: DagsterRunStatus) -> str:
    """The run the daemon would create for `request`, left in `status` (no daemon here)."""
    origin = RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=InProcessCodeLocationOrigin(
                LoadableTargetOrigin(module_name="lily_dagster.definitions")
            ),
            repository_name="__repository__",
        ),
        job_name="tenant_ingest_job",
    )
    run = create_run_for_test(
        instance,
        job_name="tenant_ingest_job",
        run_config=request.run_config,
        tags={**request.tags, "dagster/partition": request.partition_key or ""},
        status=status,
        remote_job_origin=origin,
    )
    stored = instance.get_run_by_id(run.run_id)
    assert stored is not None and stored.status == status
    return run.run_id


def _staging(home: Path) -> StagingArea:
    return StagingArea(home / "staging")


@pytest.mark.parametrize(
    "status", [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING]
)
def test_a_tenant_with_a_queued_run_gets_no_second_run_and_that_run_takes_the_new_batch(
    lily_home: Path,
    kafka_bootstrap: str,
    topic: str,
    status: DagsterRunStatus,
    dagster_storage: InstanceFactory,
) -> None:
    produce(kafka_bootstrap, topic, table_messages("acme", ["A1", "A2"]))
    with dagster_storage() as instance:
        first = tick(instance, None)
        assert isinstance(first, SensorResult) and first.cursor
        harness.run_requested(
            instance, SensorResult(dynamic_partitions_requests=first.dynamic_partitions_requests)
        )
        (queued,) = first.run_requests or []
        _queue(instance, queued, status)
        # Landed while acme's run waits in the queue: no second run, the queued one takes it.
        produce(
            kafka_bootstrap,
            topic,
            [*table_messages("acme", ["A3"]), *table_messages("globex", ["G1"])],
        )
        second = tick(instance, first.cursor)
        assert isinstance(second, SensorResult) and second.cursor
        assert [r.partition_key for r in second.run_requests or []] == ["globex"]
        assert len(_staging(lily_home).pending("acme")) == 2
        harness.execute(instance, queued)
    assert sorted(r["name"] for r in hub_state(lily_home, "acme").values()) == ["A1", "A2", "A3"]
    assert _staging(lily_home).pending("acme") == []


def test_a_batch_landed_once_the_run_has_started_gets_a_run_of_its_own(
    lily_home: Path, kafka_bootstrap: str, topic: str, dagster_storage: InstanceFactory
) -> None:
    produce(kafka_bootstrap, topic, table_messages("acme", ["A1"]))
    with dagster_storage() as instance:
        first = tick(instance, None)
        assert isinstance(first, SensorResult) and first.cursor
        (started,) = first.run_requests or []
        # Its landed_events may have listed the pending batches already: it cannot be relied on.
        _queue(instance, started, DagsterRunStatus.STARTED)
        produce(kafka_bootstrap, topic, table_messages("acme", ["A2"]))
        second = tick(instance, first.cursor)
        assert isinstance(second, SensorResult)
        assert [r.partition_key for r in second.run_requests or []] == ["acme"]


def test_pending_batches_no_run_took_get_a_run_after_a_while(
    lily_home: Path,
    kafka_bootstrap: str,
    topic: str,
    monkeypatch: pytest.MonkeyPatch,
    dagster_storage: InstanceFactory,
) -> None:
    produce(kafka_bootstrap, topic, table_messages("acme", ["A1"]))
    with dagster_storage() as instance:
        first = tick(instance, None)
        assert isinstance(first, SensorResult) and first.cursor
        harness.run_requested(
            instance, SensorResult(dynamic_partitions_requests=first.dynamic_partitions_requests)
        )
        # Its run was cancelled while queued, before it took the batch.
        _queue(instance, (first.run_requests or [])[0], DagsterRunStatus.CANCELED)
        idle = tick(instance, first.cursor)
        assert isinstance(idle, SensorResult) and not idle.run_requests  # too recent yet
        monkeypatch.setattr(sensors, "SWEEP_AFTER_S", 0.0)
        swept = tick(instance, first.cursor)
        assert isinstance(swept, SensorResult)
        (request,) = swept.run_requests or []
        assert request.partition_key == "acme" and request.tags["lily/source"] == "sweep"
        harness.execute(instance, request)
        assert _staging(lily_home).pending("acme") == []
        assert [r["name"] for r in hub_state(lily_home, "acme").values()] == ["A1"]
        # Nothing left: the next tick requests nothing.
        again = tick(instance, first.cursor)
        assert isinstance(again, SensorResult) and not again.run_requests


def test_one_run_per_tick_skips_the_tenants_of_its_range_whose_queued_run_takes_their_batch(
    lily_home: Path, kafka_bootstrap: str, topic: str, dagster_storage: InstanceFactory
) -> None:
    produce(kafka_bootstrap, topic, [*table_messages("acme", ["A1"])])
    with dagster_storage() as instance:
        instance.add_dynamic_partitions("tenants", ["acme", "globex", "initech"])
        produce(kafka_bootstrap, topic, table_messages("globex", ["G1"]))
        first = tick(instance, None)
        assert isinstance(first, SensorResult) and first.cursor
        (shared,) = first.run_requests or []
        harness.execute(instance, shared)
        # globex's next run waits in the queue: the tick's one run spans acme..initech but
        # leaves globex's new batch to it.
        waiting = sensors.ingest_run_request("globex", "queued-batch", "kafka", block=0)
        _queue(instance, waiting, DagsterRunStatus.QUEUED)
        produce(
            kafka_bootstrap,
            topic,
            [
                *table_messages("acme", ["A2"]),
                *table_messages("globex", ["G2"]),
                *table_messages("initech", ["I1"]),
            ],
        )
        second = tick(instance, first.cursor)
        assert isinstance(second, SensorResult)
        (request,) = second.run_requests or []
        assert request.partition_key is None
        assert request.tags["dagster/asset_partition_range_start"] == "acme"
        assert request.tags["dagster/asset_partition_range_end"] == "initech"
        assert harness.tenants_of(request) == ["acme", "initech"]
        globex_before = _count(instance, "hub_records", "globex")
        harness.execute(instance, request)
        landed = _latest(instance, "landed_events", "globex")
        assert landed["events_in"] == 0 and landed["batch_ids"] == "none (not in this run)"
        # The run records no hub materialisation for a tenant it had nothing of: globex's
        # latest is still the one that applied G1, with the change log's head.
        assert _count(instance, "hub_records", "globex") == globex_before == 1
        left_alone = _latest(instance, "hub_records", "globex")
        assert left_alone["events_applied"] == 1 and left_alone["change_seq"] == 1
        assert _latest(instance, "hub_records", "initech")["events_applied"] == 1
        assert _latest(instance, "hub_records", "acme")["events_applied"] == 1
    assert len(_staging(lily_home).pending("globex")) == 1
    assert sorted(r["name"] for r in hub_state(lily_home, "acme").values()) == ["A1", "A2"]
    assert [r["name"] for r in hub_state(lily_home, "initech").values()] == ["I1"]
    assert [r["name"] for r in hub_state(lily_home, "globex").values()] == ["G1"]


def _count(instance: DagsterInstance, asset: str, tenant: str) -> int:
    records = instance.fetch_materializations(AssetKey(asset), limit=1000).records
    return sum(
        1
        for r in records
        if r.asset_materialization and r.asset_materialization.partition == tenant
    )


def _latest(instance: DagsterInstance, asset: str, tenant: str) -> dict[str, Any]:
    for record in instance.fetch_materializations(AssetKey(asset), limit=1000).records:
        mat = record.asset_materialization  # newest first
        if mat is not None and mat.partition == tenant:
            return {k: v.value for k, v in mat.metadata.items()}
    raise AssertionError(f"no materialisation of {asset} for {tenant}")
