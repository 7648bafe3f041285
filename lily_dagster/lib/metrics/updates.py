"""What each piece of work adds to the pipeline metrics (CONTRACT.md §8), as Updates for
MetricsStore.record: the call sites say what happened, these say which series it moves."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl

from lily_dagster.lib.metrics.store import Update

EVENTS = "lily_events_total"
QUARANTINED = "lily_quarantined_total"
HUB_RECORDS = "lily_hub_records"
HUB_REQUESTS = "lily_hub_requests_total"
KAFKA_LAG = "lily_kafka_lag_messages"
PENDING_CHANGES = "lily_propagation_pending_changes"
DEAD_LETTERS = "lily_dead_letters"
# Statuses a hub gauge always reports, so one that empties reads 0 rather than its last value.
STATUSES = ("ACTIVE", "DELETED")


def stage(tenant: str, name: str, events: int) -> Update:
    """`events` of the tenant reached stage `name` (landed, valid, quarantined, applied)."""
    return stages(tenant, **{name: events})


def stages(tenant: str, **events: int) -> Update:
    """Events of the tenant per stage reached (landed=…, valid=…)."""
    update = Update()
    for name, n in events.items():
        update.count(EVENTS, {"tenant": tenant, "stage": name}, n)
    return update


def quarantined(tenant: str, rejects: pl.DataFrame) -> Update:
    """Rejected events kept in the tenant's quarantine, by reason."""
    update = stage(tenant, "quarantined", rejects.height)
    for reason, n in rejects.group_by("reason").len().iter_rows():
        update.count(QUARANTINED, {"tenant": tenant, "reason": str(reason)}, n)
    return update


def applied(
    tenant: str,
    events: int,
    status_counts: Mapping[str, int],
    latencies_s: np.ndarray | None = None,
) -> Update:
    """A batch taken by the tenant's hub: the events, the hub's size after it, and each
    event's time from landing to visible."""
    update = stage(tenant, "applied", events)
    if latencies_s is not None:
        update.latencies(tenant, latencies_s)
    for status in sorted({*STATUSES, *status_counts}):
        update.gauge(
            HUB_RECORDS, {"tenant": tenant, "status": status}, status_counts.get(status, 0)
        )
    return update


def hub_requests(hub: str, outcomes: Mapping[str, int]) -> Update:
    update = Update()
    for outcome, n in outcomes.items():
        update.count(HUB_REQUESTS, {"hub": hub, "outcome": outcome}, n)
    return update


def kafka_lag(lags: Mapping[str, int]) -> Update:
    update = Update()
    for topic, lag in lags.items():
        update.gauge(KAFKA_LAG, {"topic": topic}, lag)
    return update


def propagation(tenant: str, target: str, pending: int, dead_letters: int) -> Update:
    labels = {"tenant": tenant, "target": target}
    return (
        Update().gauge(PENDING_CHANGES, labels, pending).gauge(DEAD_LETTERS, labels, dead_letters)
    )


def event_delays(times: pl.Series, now: float) -> np.ndarray:
    """Seconds from each of `times` (datetimes) to `now` (epoch seconds), never negative."""
    epoch = times.dt.epoch("us").to_numpy().astype(float) / 1e6
    return np.clip(now - epoch[~np.isnan(epoch)], 0.0, None)
