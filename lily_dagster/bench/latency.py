"""Streaming latency: events produced to Kafka at a fixed rate across several tenants, and
the time from produce to visible in the hub, with the real Dagster daemon running.

`run_latency` sets up a fresh LILY_HOME (a temporary directory unless given) and the
embedded broker on a free port (unless LILY_KAFKA_BOOTSTRAP names one), starts the daemon
as `lily run` does, waits for the Kafka sensor's first tick, then produces valid envelopes
(one new Table per event, tenants t0..tN-1, event_time = now) at `rate` events/s for
`seconds`, in small bursts from a thread. Meanwhile it polls each tenant's LocalHub
read-only for the names not yet seen, and only when the tenant's database files changed
since the last poll (a read holds DuckDB's file lock, which makes a run writing the file
wait), recording when each event became visible. It waits up to a drain timeout after
producing stops, stops the daemon and the broker, and returns a JSON-ready summary.
"""

from __future__ import annotations

import json
import math
import os
import queue
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import yaml

from lily_dagster.bench.scratch_pg import DEFAULT_ADMIN_URL, scratch_database

BURST_S = 0.05  # the producer sends what is due every 50 ms
POLL_S = 0.25  # the hub is polled every 250 ms
DRAIN_TIMEOUT_S = 120.0  # how long to wait for the last events after producing stops
READY_TIMEOUT_S = 120.0  # how long the daemon may take to tick the Kafka sensor once
SETTLE_S = 30.0  # after the last event is visible, wait this long for runs in flight to end
WINDOW_S = 5.0  # p95 per window of this many seconds of producing (to see a trend)

# (tenant, qualified name, monotonic produce time) of the events of one burst
Burst = list[tuple[str, str, float]]


class LatencyBenchError(RuntimeError):
    pass


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of `values` (non-empty), q in (0, 1]."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def envelope(run: str, tenant: str, seq: int) -> tuple[str, bytes]:
    """A valid upsert of a new Table (unique qualified name), event_time = now."""
    schema = f"default/snowflake/1700000000/BENCH/{run}"
    name = f"T{seq:08d}"
    qualified_name = f"{schema}/{name}"
    body = {
        "event_id": f"{run}-{seq:08d}",
        "tenant": tenant,
        "source": "snowflake",
        "op": "upsert",
        "event_time": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "asset": {
            "type_name": "Table",
            "qualified_name": qualified_name,
            "name": name,
            "attributes": {"description": "latency benchmark", "parent_qualified_name": schema},
        },
    }
    return qualified_name, json.dumps(body, separators=(",", ":")).encode()


class PacedProducer(threading.Thread):
    """Produces `round(rate * seconds)` envelopes, what is due every BURST_S, round-robin
    over the tenants; each burst's (tenant, name, produce time) goes to `out`."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        rate: float,
        seconds: float,
        tenants: list[str],
        run: str,
        out: queue.SimpleQueue[Burst],
    ) -> None:
        super().__init__(name="lily-bench-producer", daemon=True)
        self.bootstrap, self.topic, self.rate, self.seconds = bootstrap, topic, rate, seconds
        self.tenants, self.run_id, self.out = tenants, run, out
        self.total = round(rate * seconds)
        self.sent = 0
        self.errors: list[str] = []
        self.started_at = 0.0
        self.ended_at = 0.0  # when the last event was handed to the producer
        self.stop_event = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            self._produce()
        except BaseException as exc:  # reported by the main thread
            self.failure = exc

    def _produce(self) -> None:
        from confluent_kafka import Producer

        def on_delivery(err: object, _msg: object) -> None:
            if err is not None:
                self.errors.append(str(err))

        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5})
        self.started_at = time.monotonic()
        bursts = 0
        while self.sent < self.total and not self.stop_event.is_set():
            elapsed = time.monotonic() - self.started_at
            due = (
                self.total if elapsed >= self.seconds else min(self.total, int(self.rate * elapsed))
            )
            burst: Burst = []
            while self.sent < due:
                tenant = self.tenants[self.sent % len(self.tenants)]
                name, value = envelope(self.run_id, tenant, self.sent)
                while True:
                    try:
                        producer.produce(
                            self.topic, key=name.encode(), value=value, on_delivery=on_delivery
                        )
                        break
                    except BufferError:
                        producer.poll(0.01)
                burst.append((tenant, name, time.monotonic()))
                self.sent += 1
            if burst:
                self.out.put(burst)
                self.ended_at = burst[-1][2]
            producer.poll(0)
            bursts += 1
            pause = self.started_at + bursts * BURST_S - time.monotonic()
            if pause > 0:
                self.stop_event.wait(pause)
        left = producer.flush(30)
        if left:
            self.errors.append(f"{left} messages not acknowledged within 30 s")


def _file_signature(path: Path) -> tuple[int, ...] | None:
    """What changes whenever a writer commits to the DuckDB file (or its WAL)."""
    parts: list[int] = []
    for p in (path, path.with_name(path.name + ".wal")):
        try:
            st = p.stat()
        except FileNotFoundError:
            if p == path:
                return None
            parts += [-1, -1]
        else:
            parts += [st.st_mtime_ns, st.st_size]
    return tuple(parts)


@contextmanager
def _environ(updates: dict[str, str | None]) -> Iterator[None]:
    """Set (or, for None, unset) environment variables; restore them afterwards."""
    saved = {k: os.environ.get(k) for k in updates}

    def apply(values: dict[str, str | None]) -> None:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    apply(updates)
    try:
        yield
    finally:
        apply(saved)


def _broker(home: Path) -> tuple[str, Callable[[], None]]:
    """LILY_KAFKA_BOOTSTRAP if set, else the embedded broker on a free port."""
    from lily_dagster.lib.broker import free_port, start_broker

    external = os.environ.get("LILY_KAFKA_BOOTSTRAP")
    if external:
        return external, lambda: None
    from lily_dagster.lib import processes

    port = free_port()
    proc = start_broker(port, home / "logs" / "broker.log")

    def stop() -> None:
        processes.stop(proc)

    return f"127.0.0.1:{port}", stop


def pipeline_settings() -> dict[str, Any]:
    """The settings that decide the latency: sensor cadence, executor, run queue."""
    from dagster._daemon import sensor as sensor_daemon

    from lily_dagster.defs.ingest.sensors import (
        KAFKA_READ_MAX_SECONDS,
        kafka_events_sensor,
        tenant_ingest_job,
    )
    from lily_dagster.runtime import DAGSTER_YAML

    instance_yaml = yaml.safe_load(DAGSTER_YAML.read_text()) or {}
    coordinator = (instance_yaml.get("run_coordinator") or {}).get("config") or {}
    executor = tenant_ingest_job.executor_def
    return {
        "sensor_min_interval_s": kafka_events_sensor.minimum_interval_seconds,
        # The daemon evaluates sensors at most this often, whatever their minimum interval.
        "sensor_daemon_loop_s": sensor_daemon.MIN_INTERVAL_LOOP_TIME,
        "executor": executor.name if executor is not None else None,
        "run_launcher": (instance_yaml.get("run_launcher") or {}).get("class"),
        "dequeue_interval_s": coordinator.get("dequeue_interval_seconds"),
        "dequeue_use_threads": coordinator.get("dequeue_use_threads", False),
        "max_concurrent_runs": coordinator.get("max_concurrent_runs"),
        # One run per tick for every tenant with new events (a run over the range of their
        # tenant partitions), multi-tenant runs one at a time.
        "runs_per_tick": 1,
        # A tenant with a run not started yet gets no second one: that run takes the batch.
        "queued_runs_per_tenant": 1,
        "kafka_read_max_s": KAFKA_READ_MAX_SECONDS,
        "sensor_submit_workers": (instance_yaml.get("sensors") or {}).get("num_submit_workers"),
        "cpus": os.cpu_count(),
    }


def _run_figures(instance: Any) -> dict[str, Any]:
    """Runs of the ingest job by status, and their queue wait and duration."""
    from dagster import DagsterRunStatus, RunsFilter

    from lily_dagster.defs.ingest.sensors import run_tenants

    records = instance.get_run_records(filters=RunsFilter(job_name="tenant_ingest_job"))
    by_status: dict[str, int] = {}
    for record in records:
        status = record.dagster_run.status
        key = status.value.lower() if isinstance(status, DagsterRunStatus) else str(status)
        by_status[key] = by_status.get(key, 0) + 1
    waits = [
        r.start_time - r.create_timestamp.timestamp() for r in records if r.start_time is not None
    ]
    durations = [
        r.end_time - r.start_time
        for r in records
        if r.start_time is not None and r.end_time is not None
    ]

    def summary(values: list[float]) -> dict[str, float] | None:
        if not values:
            return None
        return {
            "p50": round(percentile(values, 0.5), 2),
            "p95": round(percentile(values, 0.95), 2),
            "max": round(max(values), 2),
        }

    events = [len(instance.all_logs(r.dagster_run.run_id)) for r in records]
    return {
        "count": len(records),
        "by_status": dict(sorted(by_status.items())),
        "queued_to_started_s": summary(waits),
        "started_to_ended_s": summary(durations),
        # What a run writes to Dagster's event log (planned, materialisations, checks, steps).
        "dagster_events_per_run": summary([float(n) for n in events]),
        "tenants_per_run": summary([float(len(run_tenants(r.dagster_run))) for r in records]),
    }


def run_latency(
    rate: float,
    seconds: float,
    tenants: int = 3,
    home: Path | None = None,
    drain_timeout_s: float = DRAIN_TIMEOUT_S,
    encryption: str | None = None,
    storage: str = "sqlite",
    pg_admin_url: str = DEFAULT_ADMIN_URL,
    metrics: str | None = None,
) -> dict[str, Any]:
    """Produce `rate` events/s for `seconds` across `tenants` tenants with the daemon running;
    return produce-to-hub latency percentiles and what decides them (JSON-ready).
    `encryption` "on"/"off" sets LILY_ENCRYPTION (None: the environment's). `storage`
    "postgres" keeps Dagster's storage in a scratch database on `pg_admin_url`'s server."""
    if not (rate > 0 and seconds > 0 and tenants >= 1):
        raise ValueError("rate and seconds must be positive and tenants at least 1")
    if storage not in ("sqlite", "postgres"):
        raise ValueError(f"storage must be sqlite or postgres, not {storage!r}")
    env: dict[str, str | None] = {
        "LILY_HUB": "local",  # the benchmark reads LocalHub
        "LILY_CONFIG": None,  # no topic bindings, targets or hooks from the caller's file
        "LILY_DAGSTER_PG_URL": None,
    }
    if encryption is not None:
        env["LILY_ENCRYPTION"] = encryption
    if metrics is not None:
        env["LILY_METRICS"] = metrics
    if storage == "sqlite":
        result = _in_home(rate, seconds, tenants, home, drain_timeout_s, env)
    else:
        with scratch_database(pg_admin_url) as url:
            env["LILY_DAGSTER_PG_URL"] = url
            result = _in_home(rate, seconds, tenants, home, drain_timeout_s, env)
    return {**result, "storage": storage}


def _in_home(
    rate: float,
    seconds: float,
    tenants: int,
    home: Path | None,
    drain_timeout_s: float,
    env: dict[str, str | None],
) -> dict[str, Any]:
    """_measure in `home` (a temporary directory, removed afterwards, when None)."""
    root = Path(tempfile.mkdtemp(prefix="lily-bench-latency-")) if home is None else home
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    (root / "logs").mkdir(exist_ok=True)
    run = "LAT" + uuid.uuid4().hex[:10].upper()
    topic = f"lily.bench.latency.{run.lower()}"
    env = {
        **env,
        "LILY_HOME": str(root),
        "DAGSTER_HOME": str(root / "dagster"),
        "LILY_KAFKA_TOPICS": topic,
    }
    with _environ(env):
        result = _measure(root, rate, seconds, tenants, run, topic, drain_timeout_s)
    if home is None:
        shutil.rmtree(root, ignore_errors=True)
    else:
        result["lily_home"] = str(root)
    return result


def compare_latency(
    rate: float,
    seconds: float,
    tenants: int = 3,
    switch: str = "encryption",
    rounds: int = 1,
    **storage: Any,
) -> dict[str, Any]:
    """The same load with `switch` (encryption or metrics) off and on, side by side (one
    JSON object); with `rounds` > 1 the pair runs that often, its order alternating so that
    neither side always runs on a warmer machine, and the p95s compared are the medians."""
    if switch not in ("encryption", "metrics"):
        raise ValueError(f"switch must be encryption or metrics, not {switch!r}")
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for i in range(rounds):
        for mode in ("off", "on") if i % 2 == 0 else ("on", "off"):
            result = run_latency(rate, seconds, tenants=tenants, **{**storage, switch: mode})
            runs[mode].append(result)
    p95 = {m: statistics.median(r["latency_s"]["p95"] for r in runs[m]) for m in runs}
    change = round(100 * (p95["on"] - p95["off"]) / p95["off"], 1) if p95["off"] else None
    if rounds == 1:
        return {"benchmark": f"latency-{switch}", "off": runs["off"][0], "on": runs["on"][0],
                "p95_change_pct": change}  # fmt: skip
    return {
        "benchmark": f"latency-{switch}",
        "rounds": rounds,
        **{m: [r["latency_s"] | {"lost": r["lost"]} for r in runs[m]] for m in runs},
        "median_p95_s": p95,
        "p95_change_pct": change,
    }


def _measure(
    root: Path,
    rate: float,
    seconds: float,
    tenants: int,
    run: str,
    topic: str,
    drain_timeout_s: float,
) -> dict[str, Any]:
    from dagster import DagsterInstance

    from lily_dagster.lib.broker import ensure_topics
    from lily_dagster.lib.hub.local import HubLockedError, LocalHub
    from lily_dagster.runtime import (
        KAFKA_SENSOR,
        prepare_dagster_home,
        runs_in_flight,
        sensor_cursor,
        start_daemon,
        stop_process,
    )
    from lily_dagster.settings import Settings

    load_at_start = os.getloadavg()[0]  # other work on the machine skews the figures
    bootstrap, stop_broker = _broker(root)
    daemon: subprocess.Popen[bytes] | None = None
    producer: PacedProducer | None = None
    try:
        settings = Settings.from_env().model_copy(update={"kafka_bootstrap": bootstrap})
        ensure_topics(bootstrap, [topic])
        prepare_dagster_home(settings)
        log_path = root / "logs" / "daemon.log"
        daemon = start_daemon(settings, log_path)
        with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
            # Steady state only: the daemon has loaded the code and the sensor has read the
            # (new) topic once.
            ready_by = time.monotonic() + READY_TIMEOUT_S
            while topic not in sensor_cursor(instance, KAFKA_SENSOR):
                if daemon.poll() is not None:
                    raise LatencyBenchError(
                        f"Dagster daemon exited with code {daemon.returncode}; see {log_path}"
                    )
                if time.monotonic() > ready_by:
                    raise LatencyBenchError(
                        f"{KAFKA_SENSOR} did not tick within {READY_TIMEOUT_S:.0f}s; see {log_path}"
                    )
                time.sleep(0.2)

            names = [f"t{i}" for i in range(tenants)]
            bursts: queue.SimpleQueue[Burst] = queue.SimpleQueue()
            producer = PacedProducer(bootstrap, topic, rate, seconds, names, run, bursts)
            hub = LocalHub(settings.hub_dir, lock_timeout_s=0)  # a locked file: next poll
            pending: dict[str, dict[str, float]] = {t: {} for t in names}
            last_seen: dict[str, tuple[int, ...] | None] = {t: None for t in names}
            samples: list[tuple[float, float]] = []  # (produced at, latency)
            produced = polls = locked = 0
            producer.start()
            drain_until: float | None = None
            while True:
                started = time.monotonic()
                while True:
                    try:
                        burst = bursts.get_nowait()
                    except queue.Empty:
                        break
                    for tenant, name, at in burst:
                        pending[tenant][name] = at
                    produced += len(burst)
                for tenant, waiting in pending.items():
                    if not waiting:
                        continue
                    signature = _file_signature(hub.path(tenant))
                    if signature is None or signature == last_seen[tenant]:
                        continue  # nothing written since the last poll
                    polls += 1
                    try:
                        found = hub.contains(tenant, list(waiting))
                    except (HubLockedError, duckdb.Error):
                        locked += 1  # a run is writing it: next poll
                        continue
                    seen_at = time.monotonic()
                    last_seen[tenant] = signature
                    for name in found:
                        at = waiting.pop(name)
                        samples.append((at, seen_at - at))
                if producer.failure is not None:
                    raise LatencyBenchError(f"producer failed: {producer.failure}")
                if daemon.poll() is not None:
                    raise LatencyBenchError(
                        f"Dagster daemon exited with code {daemon.returncode}; see {log_path}"
                    )
                if not producer.is_alive() and bursts.empty():
                    if drain_until is None:
                        drain_until = time.monotonic() + drain_timeout_s
                    if not any(pending.values()) or time.monotonic() > drain_until:
                        break
                time.sleep(max(0.0, POLL_S - (time.monotonic() - started)))

            settle_until = time.monotonic() + SETTLE_S
            while runs_in_flight(instance) and time.monotonic() < settle_until:
                time.sleep(0.5)
            runs = _run_figures(instance)
    finally:
        if producer is not None:
            producer.stop_event.set()
            producer.join(35)
        if daemon is not None:
            stop_process(daemon)
        stop_broker()

    latencies = [lat for _, lat in samples]
    windows: dict[int, list[float]] = {}
    for at, lat in samples:
        windows.setdefault(int((at - producer.started_at) // WINDOW_S), []).append(lat)
    produce_s = producer.ended_at - producer.started_at
    return {
        "benchmark": "latency",
        "rate": rate,
        "seconds": seconds,
        "tenants": tenants,
        "produced": produced,
        "produce_rate": round(produced / produce_s, 1) if produce_s > 0 else None,
        "produce_errors": len(producer.errors),
        "visible": len(latencies),
        "lost": produced - len(latencies),
        "latency_s": {
            "p50": round(percentile(latencies, 0.5), 3) if latencies else None,
            "p95": round(percentile(latencies, 0.95), 3) if latencies else None,
            "max": round(max(latencies), 3) if latencies else None,
        },
        f"p95_per_{WINDOW_S:.0f}s_of_producing": [
            round(percentile(windows[w], 0.95), 2) for w in sorted(windows)
        ],
        "runs": runs,
        "events_per_run": round(len(latencies) / runs["count"], 1) if runs["count"] else None,
        "hub_polls": polls,
        "hub_polls_locked": locked,
        "settings": {
            **pipeline_settings(),
            "max_batch_events": settings.max_batch_events,
            "kafka": "LILY_KAFKA_BOOTSTRAP"
            if os.environ.get("LILY_KAFKA_BOOTSTRAP")
            else "embedded",
            "burst_s": BURST_S,
            "poll_s": POLL_S,
            "load_avg_1m_at_start": round(load_at_start, 2),
        },
    }
