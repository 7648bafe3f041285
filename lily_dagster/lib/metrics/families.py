"""The metric families of CONTRACT.md §8: names, kinds, labels and help, in one place
(the receiver's exposition, the docs and the dashboard's checks read them here)."""

from __future__ import annotations

from dataclasses import dataclass

STAGES = ("landed", "valid", "quarantined", "applied")
HUB_OUTCOMES = ("ok", "retried", "throttled", "failed")
LATENCY = "lily_end_to_end_latency_seconds"
# Seconds from landing to visible in the hub: a run per sensor tick puts most events
# between 5 s and a minute.
LATENCY_BUCKETS = (1.0, 2.5, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0, 600.0)


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # counter, gauge, histogram
    labels: tuple[str, ...]
    help: str

    @property
    def sample_name(self) -> str:
        """The name a counter's samples are stored under (with `_total`)."""
        return self.name if self.kind != "counter" else f"{self.name}_total"


FAMILIES = (
    Family(
        "lily_events",
        "counter",
        ("tenant", "stage"),
        "Events per tenant by stage: landed (staged by a sensor or read by a backfill), "
        "valid, quarantined, applied (taken by the hub)",
    ),
    Family(
        "lily_quarantined",
        "counter",
        ("tenant", "reason"),
        "Events quarantined per tenant by reason",
    ),
    Family("lily_hub_records", "gauge", ("tenant", "status"), "Hub records by status"),
    Family("lily_kafka_lag_messages", "gauge", ("topic",), "Messages not yet landed"),
    Family(
        LATENCY,
        "histogram",
        ("tenant",),
        "Seconds from an event landing to it being visible in the hub",
    ),
    Family(
        "lily_propagation_pending_changes",
        "gauge",
        ("tenant", "target"),
        "Hub changes a target has not received yet",
    ),
    Family("lily_dead_letters", "gauge", ("tenant", "target"), "Changes in a target's DLQ"),
    Family(
        "lily_hub_requests",
        "counter",
        ("hub", "outcome"),
        "Requests to the hub by outcome (ok, retried, throttled: Atlan's 429s, failed)",
    ),
)
