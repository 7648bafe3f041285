"""Durable pipeline metrics: one SQLite file every Lily process writes and the receiver
reads at scrape time.

Why not prometheus-client's multiprocess mode: its counters live in per-process files that
are wiped when the stack restarts (a counter must never go back), runs are short-lived
processes by the thousand, and a gauge such as a tenant's hub size is known only to the run
that last wrote the hub. Here a counter is a row incremented in a transaction, once per
idempotency key (a batch applied twice by a retried run counts once), and a gauge is the
last value its writer set. A scrape is one read-only query (no hub is opened)."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from lily_dagster.settings import Settings
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from lily_dagster.lib.metrics.families import FAMILIES, LATENCY, LATENCY_BUCKETS, Family

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    name TEXT NOT NULL, labels TEXT NOT NULL, value REAL NOT NULL, PRIMARY KEY (name, labels)
);
CREATE TABLE IF NOT EXISTS gauges (
    name TEXT NOT NULL, labels TEXT NOT NULL, value REAL NOT NULL, set_at REAL NOT NULL,
    PRIMARY KEY (name, labels)
);
CREATE TABLE IF NOT EXISTS counted (key TEXT PRIMARY KEY, at REAL NOT NULL);
"""
_logger = logging.getLogger(__name__)
_READ = "SELECT name, labels, value FROM {}"
Labels = Mapping[str, str]
Sample = tuple[str, dict[str, str], float]


@dataclass
class Update:
    """What one piece of work adds to the metrics: counter increments and gauge values."""

    counts: list[tuple[str, Labels, float]] = field(default_factory=list)
    gauges: list[tuple[str, Labels, float]] = field(default_factory=list)

    def count(self, name: str, labels: Labels, amount: float) -> Update:
        if amount:
            self.counts.append((name, labels, amount))
        return self

    def gauge(self, name: str, labels: Labels, value: float) -> Update:
        self.gauges.append((name, labels, value))
        return self

    def merge(self, other: Update) -> Update:
        self.counts += other.counts
        self.gauges += other.gauges
        return self

    def latencies(self, tenant: str, seconds: Sequence[float] | np.ndarray) -> Update:
        """Each of `seconds` observed in the tenant's end-to-end latency histogram."""
        values = np.sort(np.asarray(seconds, dtype=float))
        if not values.size:
            return self
        within = np.searchsorted(values, LATENCY_BUCKETS, side="right")
        for bound, n in zip(LATENCY_BUCKETS, within.tolist(), strict=True):
            self.count(f"{LATENCY}_bucket", {"tenant": tenant, "le": _bound(bound)}, n)
        self.count(f"{LATENCY}_bucket", {"tenant": tenant, "le": "+Inf"}, values.size)
        self.count(f"{LATENCY}_sum", {"tenant": tenant}, float(values.sum()))
        return self.count(f"{LATENCY}_count", {"tenant": tenant}, values.size)


class MetricsStore:
    """`$LILY_HOME/metrics/pipeline.sqlite`; a store not `enabled` (LILY_METRICS=off)
    records and serves nothing."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled

    @classmethod
    def in_home(cls, home: Path, enabled: bool = True) -> MetricsStore:
        return cls(home / "metrics" / "pipeline.sqlite", enabled)

    @classmethod
    def from_settings(cls, settings: Settings) -> MetricsStore:
        """The store under $LILY_HOME, recording unless LILY_METRICS is off."""
        return cls.in_home(settings.home, settings.metrics)

    def record(self, update: Update, key: str | None = None) -> bool:
        """Apply `update` in one transaction; with `key`, its counts only the first time
        the key is recorded (gauges are always set). Whether the counts were added."""
        if not self.enabled or (not update.counts and not update.gauges):
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        now = time.time()
        with closing(self._connect()) as con, con:
            fresh = key is None or (
                con.execute("INSERT OR IGNORE INTO counted VALUES (?, ?)", (key, now)).rowcount == 1
            )
            if fresh:
                con.executemany(
                    "INSERT INTO counters VALUES (?, ?, ?) ON CONFLICT (name, labels) "
                    "DO UPDATE SET value = value + excluded.value",
                    [(n, _labels(lb), v) for n, lb, v in update.counts],
                )
            con.executemany(
                "INSERT OR REPLACE INTO gauges VALUES (?, ?, ?, ?)",
                [(n, _labels(lb), v, now) for n, lb, v in update.gauges],
            )
            return fresh

    def try_record(self, update: Update, key: str | None = None) -> None:
        """`record`, a failure logged instead of raised: metrics must not fail the work
        they describe (the pipeline's own state stays right; the figure is then short)."""
        try:
            self.record(update, key)
        except (sqlite3.Error, OSError) as exc:  # a locked, corrupt or unwritable file
            _logger.warning(f"metrics not recorded ({self.path}: {exc})")

    def forget_keys(self, older_than_s: float) -> int:
        """Drop idempotency keys older than `older_than_s` (run retention's horizon)."""
        if not self.path.exists():
            return 0
        with closing(self._connect()) as con, con:
            gone = con.execute("DELETE FROM counted WHERE at < ?", (time.time() - older_than_s,))
            return gone.rowcount

    def forget_tenant(self, tenant: str) -> None:
        """A deleted tenant's series (`lily tenant delete`)."""
        if not self.path.exists():
            return
        with closing(self._connect()) as con, con:
            for table in ("counters", "gauges"):
                rows = con.execute(f"SELECT name, labels FROM {table}").fetchall()
                gone = [r for r in rows if json.loads(r[1]).get("tenant") == tenant]
                con.executemany(f"DELETE FROM {table} WHERE name = ? AND labels = ?", gone)

    def samples(self) -> tuple[list[Sample], list[Sample]]:
        """(counters, gauges) as (name, labels, value), read without writing."""
        if not self.enabled or not self.path.exists():
            return [], []
        uri = f"file:{self.path}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=5)) as con:
            counters, gauges = (
                [(n, json.loads(lb), float(v)) for n, lb, v in con.execute(sql).fetchall()]
                for sql in (_READ.format("counters"), _READ.format("gauges"))
            )
            return counters, gauges

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.executescript(_SCHEMA)
        con.isolation_level = "DEFERRED"
        return con


class PipelineCollector:
    """prometheus-client collector over a MetricsStore: every family of CONTRACT.md §8,
    with the samples the store holds (a family without any is still described)."""

    def __init__(self, store: MetricsStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        try:
            counters, gauges = self.store.samples()
        except sqlite3.Error as exc:  # the receiver's own metrics are still served
            _logger.warning(f"pipeline metrics unreadable ({self.store.path}: {exc})")
            counters, gauges = [], []
        by_name: dict[str, list[Sample]] = {}
        for sample in (*counters, *gauges):
            by_name.setdefault(sample[0], []).append(sample)
        for family in FAMILIES:
            if family.kind == "histogram":
                parts = ("_bucket", "_sum", "_count")
                yield _histogram(
                    family, [x for p in parts for x in by_name.get(family.name + p, [])]
                )
            else:
                yield _family(family, by_name.get(family.sample_name, []))

    def describe(self) -> Iterable[Metric]:
        return []  # collected fresh on every scrape


def _family(family: Family, samples: list[Sample]) -> Metric:
    """A counter or gauge family with its samples (all of them named as it is)."""
    metric_type = CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily
    metric = metric_type(family.name, family.help, labels=family.labels)
    for _name, labels, value in samples:
        metric.add_metric([labels.get(k, "") for k in family.labels], value)
    return metric


def _histogram(family: Family, samples: list[Sample]) -> Metric:
    metric = HistogramMetricFamily(family.name, family.help, labels=family.labels)
    series: dict[tuple[str, ...], dict[str, float]] = {}
    for name, labels, value in samples:
        key = tuple(labels.get(k, "") for k in family.labels)
        part = series.setdefault(key, {})
        part[labels["le"] if name.endswith("_bucket") else name.rsplit("_", 1)[1]] = value
    for key, part in sorted(series.items()):
        buckets = [(_bound(b), part.get(_bound(b), 0.0)) for b in LATENCY_BUCKETS]
        buckets.append(("+Inf", part.get("+Inf", 0.0)))
        metric.add_metric(list(key), buckets, part.get("sum", 0.0))
    return metric


def _labels(labels: Labels) -> str:
    return json.dumps(dict(labels), sort_keys=True, separators=(",", ":"))


def _bound(bound: float) -> str:
    return floatToGoString(bound)  # as prometheus-client writes `le` ("1.0", "+Inf")
