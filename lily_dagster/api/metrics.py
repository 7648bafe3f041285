"""The receiver's Prometheus metrics, and the middleware that counts and times requests."""

from __future__ import annotations

import re
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from lily_dagster.lib.metrics import MetricsStore, PipelineCollector

# The `endpoint` label of a request: its route family by path, else one of the named
# paths, else "other".
_TENANT_ROUTE = re.compile(r"^/v1/tenants/[^/]*/(events|assets|lineage|changes|audit)(/|$)")
TENANT_ROUTE_LABELS = {
    "events": "tenant_events",
    "assets": "assets",
    "lineage": "lineage",
    "changes": "changes",
    "audit": "audit",
}
ENDPOINT_PREFIXES = (("/v1/tenants/", "tenant_other"), ("/v1/webhooks/", "vendor_webhook"))
NAMED_PATHS = ("/healthz", "/metrics", "/openapi.json")


class Metrics:
    """The receiver's own metrics, and (with `pipeline`) the pipeline's of every Lily
    process, read from their durable store at each scrape (CONTRACT.md §8)."""

    def __init__(self, pipeline: MetricsStore | None = None) -> None:
        self.registry = CollectorRegistry()
        if pipeline is not None:
            self.registry.register(PipelineCollector(pipeline))
        self.requests = Counter(
            "lily_webhook_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.accepted = Counter(
            "lily_webhook_events_accepted",
            "Events stored in the inbox",
            ["tenant", "source"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "lily_webhook_events_duplicate",
            "Events whose event_id the inbox already held",
            ["tenant"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "lily_webhook_rejected",
            "Refused requests and rejected events by reason",
            ["reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "lily_webhook_request_seconds",
            "Request latency",
            ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.inbox_depth = Gauge(
            "lily_webhook_inbox_depth",
            "Inbox events not yet landed by the inbox sensor",
            registry=self.registry,
        )


def endpoint_label(path: str) -> str:
    route = _TENANT_ROUTE.match(path)
    if route:
        return TENANT_ROUTE_LABELS[route.group(1)]
    for prefix, label in ENDPOINT_PREFIXES:
        if path.startswith(prefix):
            return label
    return path if path in NAMED_PATHS else "other"


class RequestMetrics:
    """Counts and times every request (pure ASGI: no per-request task or body copy)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = endpoint_label(scope.get("path", ""))
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
