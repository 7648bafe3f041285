"""The pipeline's Prometheus metrics (CONTRACT.md §8), kept durably under
`$LILY_HOME/metrics/` by every process that does the work (sensors, runs, backfills) and
served by the receiver's `GET /metrics`."""

from lily_dagster.lib.metrics.store import MetricsStore, PipelineCollector

__all__ = ["MetricsStore", "PipelineCollector"]
