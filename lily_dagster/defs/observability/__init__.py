"""Alerts inside Dagster, from the pipeline metrics (for teams without Prometheus)."""
