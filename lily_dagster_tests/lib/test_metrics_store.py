"""The durable pipeline metrics (CONTRACT.md §8): a counter counts a piece of work once
whatever retries it, never goes back, adds up across processes, and a scrape reads the
file without writing it."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lily_dagster.lib.metrics import MetricsStore, PipelineCollector
from lily_dagster.lib.metrics.families import FAMILIES
from lily_dagster.lib.metrics.store import Update
from lily_dagster.lib.metrics.updates import applied, kafka_lag, stage

pytestmark = pytest.mark.unit


def exposition(store: MetricsStore) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(PipelineCollector(store))
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def events(tenant: str, stage_name: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("lily_events_total", (("stage", stage_name), ("tenant", tenant)))


def test_a_key_counts_once_and_gauges_take_the_last_value(tmp_path: Path) -> None:
    store = MetricsStore.in_home(tmp_path)
    assert store.record(applied("acme", 5, {"ACTIVE": 5}), key="batch-1")
    assert not store.record(applied("acme", 5, {"ACTIVE": 7}), key="batch-1")  # a retry
    store.record(applied("acme", 2, {"ACTIVE": 9, "DELETED": 1}), key="batch-2")
    seen = exposition(store)
    assert seen[events("acme", "applied")] == 7
    assert seen[("lily_hub_records", (("status", "ACTIVE"), ("tenant", "acme")))] == 9


def test_a_hub_status_that_empties_reads_zero(tmp_path: Path) -> None:
    store = MetricsStore.in_home(tmp_path)
    store.record(applied("acme", 1, {"DELETED": 1}), key="a")
    store.record(applied("acme", 1, {"ACTIVE": 1}), key="b")
    seen = exposition(store)
    assert seen[("lily_hub_records", (("status", "DELETED"), ("tenant", "acme")))] == 0


def test_latencies_fill_cumulative_buckets(tmp_path: Path) -> None:
    store = MetricsStore.in_home(tmp_path)
    store.record(Update().latencies("acme", [0.5, 4.0, 4.0, 700.0]))
    seen = exposition(store)
    bucket = "lily_end_to_end_latency_seconds_bucket"
    assert seen[(bucket, (("le", "1.0"), ("tenant", "acme")))] == 1
    assert seen[(bucket, (("le", "5.0"), ("tenant", "acme")))] == 3
    assert seen[(bucket, (("le", "600.0"), ("tenant", "acme")))] == 3
    assert seen[(bucket, (("le", "+Inf"), ("tenant", "acme")))] == 4
    assert seen[("lily_end_to_end_latency_seconds_sum", (("tenant", "acme"),))] == 708.5


def _add_many(path: str, worker: int) -> None:
    store = MetricsStore(Path(path))
    for i in range(50):
        store.record(stage("acme", "landed", 1), key=f"w{worker}-{i}")
        store.record(stage("acme", "landed", 1), key=f"w{worker}-{i}")  # redelivered


def test_processes_add_up_exactly(tmp_path: Path) -> None:
    path = MetricsStore.in_home(tmp_path).path
    path.parent.mkdir(parents=True)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_add_many, args=(str(path), w)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    assert exposition(MetricsStore(path))[events("acme", "landed")] == 200


def test_a_scrape_describes_every_family_and_writes_nothing(tmp_path: Path) -> None:
    store = MetricsStore.in_home(tmp_path)
    assert exposition(store) == {}  # no file yet: families without samples
    registry = CollectorRegistry()
    registry.register(PipelineCollector(store))
    text = generate_latest(registry).decode()
    assert all(f"# TYPE {f.sample_name if f.kind == 'counter' else f.name} {f.kind}" in text
               for f in FAMILIES)  # fmt: skip
    assert not store.path.exists()
    store.record(kafka_lag({"t": 3}))
    os.chmod(store.path.parent, 0o500)  # a read-only folder: a scrape still answers
    try:
        assert exposition(store)[("lily_kafka_lag_messages", (("topic", "t"),))] == 3
    finally:
        os.chmod(store.path.parent, 0o700)


def test_an_unreadable_file_still_serves_the_families(tmp_path: Path) -> None:
    store = MetricsStore.in_home(tmp_path)
    store.path.parent.mkdir(parents=True)
    store.path.write_bytes(b"not a database" * 100)
    assert exposition(store) == {}


def test_a_deleted_tenant_loses_its_series_and_old_keys_are_forgotten(tmp_path: Path) -> None:
    store = MetricsStore.in_home(tmp_path)
    store.record(stage("acme", "landed", 3), key="k")
    store.record(stage("globex", "landed", 4), key="g")
    store.forget_tenant("acme")
    assert exposition(store) == {events("globex", "landed"): 4}
    assert store.forget_keys(older_than_s=-1) == 2  # both keys are older than the future


def test_a_failure_to_record_is_logged_not_raised(tmp_path: Path) -> None:
    blocked = tmp_path / "metrics"
    blocked.write_text("a file where the folder should be")
    store = MetricsStore.in_home(tmp_path)
    store.try_record(stage("acme", "landed", 1), key="k")  # the work it describes goes on
    with pytest.raises(OSError):
        store.record(stage("acme", "landed", 1), key="k")


def test_metrics_off_records_and_serves_nothing(tmp_path: Path) -> None:
    from lily_dagster.settings import Settings

    on = MetricsStore.from_settings(Settings.resolve({"LILY_HOME": str(tmp_path)}))
    on.record(stage("acme", "landed", 3), key="b1")
    off_settings = Settings.resolve({"LILY_HOME": str(tmp_path), "LILY_METRICS": "off"})
    off = MetricsStore.from_settings(off_settings)
    assert off.path == on.path and not off_settings.metrics
    assert off.record(stage("acme", "landed", 5), key="b2") is False
    assert off.samples() == ([], [])  # not even the figures recorded before it was off
    assert exposition(on)[events("acme", "landed")] == 3  # the 5 were never written
