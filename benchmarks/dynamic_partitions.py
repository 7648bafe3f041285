"""Dagster with many tenant partitions (dynamic partitions), on SQLite and on PostgreSQL: what
the sensor, the run queue and the UI pay per tick as tenants grow. Prints one JSON object.

For each storage, on a fresh instance with N tenant partitions (default 1,000), through the real
Kafka sensor and the ingest job:
- adding the partitions (what a tick does for new tenants), listing them (every run and the
  UI do), one sensor tick that lands one event of each tenant (its runs: one per block of
  LILY_RUN_MAX_TENANTS partitions), creating those runs as the daemon does (planned events),
  executing one of them in process;
- the UI's partition view: the status of every partition of hub_records (Dagster's asset
  status cache, which the asset page and the partitions tab read), cold and warm.

    .venv/bin/python -m benchmarks.dynamic_partitions [--tenants 1000] [--storage sqlite postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from dagster import AssetKey, DagsterInstance, instance_for_test

from lily_dagster.bench.scratch_pg import scratch_database
from lily_dagster.defs.ingest.sensors import kafka_events_sensor
from lily_dagster.defs.partitions import TENANTS, tenant_partitions
from lily_dagster.lib.broker import ensure_topics, free_port, produce, start_broker
from lily_dagster.lib.dagster_storage import sqlalchemy_url
from lily_dagster_tests import sensor_harness as harness

TOPIC = "lily.bench.partitions"


@contextmanager
def instance_on(storage: str) -> Iterator[DagsterInstance]:
    with ExitStack() as stack:
        overrides = None
        if storage == "postgres":
            url = sqlalchemy_url(stack.enter_context(scratch_database()))
            overrides = {"storage": {"postgres": {"postgres_url": url}}}
        yield stack.enter_context(instance_for_test(overrides=overrides))


def clock(fn: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, round(time.perf_counter() - started, 3)


def partition_status(instance: DagsterInstance) -> int:
    from dagster._core.storage.partition_status_cache import (
        get_and_update_asset_status_cache_value,
    )

    value = get_and_update_asset_status_cache_value(
        instance, AssetKey("hub_records"), tenant_partitions
    )
    assert value is not None
    subset = value.deserialize_materialized_partition_subsets(tenant_partitions)
    return len(subset.get_partition_keys())


def measure(storage: str, tenants: int, bootstrap: str) -> dict[str, Any]:
    names = [f"t{i:04d}" for i in range(tenants)]
    produce(bootstrap, TOPIC, [(n.encode(), event(n)) for n in names])
    with instance_on(storage) as instance:
        _, add_s = clock(lambda: instance.add_dynamic_partitions(TENANTS, names))
        _, list_s = clock(lambda: instance.get_dynamic_partitions(TENANTS))
        result, tick_s = clock(lambda: harness.tick(kafka_events_sensor, instance, None))
        requests = list(result.run_requests or [])
        runs, create_s = clock(lambda: [harness.create(instance, r) for r in requests])
        _, execute_s = clock(lambda: harness.execute(instance, requests[0]))
        materialised, status_cold_s = clock(lambda: partition_status(instance))
        _, status_warm_s = clock(lambda: partition_status(instance))
        return {
            "storage": storage,
            "tenants": tenants,
            "add_partitions_s": add_s,
            "list_partitions_s": list_s,
            "sensor_tick_s": tick_s,
            "runs_requested": len(requests),
            "create_runs_s": create_s,
            "create_run_s_each": round(create_s / max(1, len(runs)), 3),
            "execute_first_run_s": execute_s,
            "tenants_in_first_run": len(harness.tenants_of(requests[0])),
            "partition_status_cold_s": status_cold_s,
            "partition_status_warm_s": status_warm_s,
            "partitions_materialised": materialised,
        }


def event(tenant: str) -> bytes:
    body = {
        "event_id": f"{tenant}-1",
        "tenant": tenant,
        "source": "bench",
        "op": "upsert",
        "event_time": "2026-12-01T00:00:00Z",
        "asset": {
            "type_name": "Table",
            "qualified_name": "default/snowflake/1/DB/SCH/T",
            "name": "T",
        },
    }
    return json.dumps(body).encode()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument(
        "--storage", nargs="+", choices=("sqlite", "postgres"), default=["sqlite", "postgres"]
    )
    args = parser.parse_args()
    rows = []
    for storage in args.storage:
        with tempfile.TemporaryDirectory() as home:
            os.environ["LILY_HOME"] = str(Path(home) / "lily")
            port = free_port()
            broker = start_broker(port)
            try:
                bootstrap = f"127.0.0.1:{port}"
                os.environ.update(LILY_KAFKA_BOOTSTRAP=bootstrap, LILY_KAFKA_TOPICS=TOPIC)
                ensure_topics(bootstrap, [TOPIC])
                rows.append(measure(storage, args.tenants, bootstrap))
            finally:
                broker.terminate()
                broker.wait(10)
    print(json.dumps({"benchmark": "dynamic-partitions", "rows": rows}))
