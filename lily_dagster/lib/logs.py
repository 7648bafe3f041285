"""Lily's structured logs: with LILY_LOG_FORMAT=json every Lily process (the CLI, the
receiver, sensors, runs) writes its `lily_dagster.*` log lines to stderr as JSON, one
object per line, in one schema (docs/operating.md, structured logs):

    {"time": RFC 3339 UTC, "level", "logger", "message",
     and where they apply: "tenant", "run_id", "batch_id", "event_id", "stage", ...}

The trail of events (`lily_dagster.trail`): one INFO line per batch and stage (landed,
validated, quarantined, applied, delivered) with its run and counts, and, at DEBUG, one
line per event keyed by `event_id` and `run_id`. `lily trace --log` prints a trace in the
same schema. Default (`text`): Python's and Dagster's own handlers, unchanged.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from lily_dagster.lib.times import iso_utc_millis

ROOT_LOGGER = "lily_dagster"
TRAIL_LOGGER = f"{ROOT_LOGGER}.trail"
# The schema's keys in the order they are written (the rest follow, sorted).
FIELDS = ("time", "level", "logger", "message", "tenant", "run_id", "batch_id", "event_id", "stage")
_EXTRA = "lily"  # the LogRecord attribute carrying a line's fields (`extra={"lily": {...}}`)

trail_logger = logging.getLogger(TRAIL_LOGGER)


def log_line(fields: dict[str, Any]) -> str:
    """One JSON log line, the schema's keys first."""
    ordered = {k: fields[k] for k in FIELDS if fields.get(k) is not None}
    ordered.update(sorted((k, v) for k, v in fields.items() if k not in FIELDS and v is not None))
    return json.dumps(ordered, ensure_ascii=False, default=str)


class JsonFormatter(logging.Formatter):
    """A LogRecord as a line of the schema; fields from `extra={"lily": {...}}`."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "time": iso_utc_millis(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, _EXTRA, {}),
        }
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return log_line(fields)


def configure_logging(log_format: str, level: str) -> None:
    """Install the JSON handler on Lily's loggers (once per process) when `log_format` is
    json. Its lines do not propagate to the root logger, so they are not written twice."""
    logger = logging.getLogger(ROOT_LOGGER)
    if log_format != "json" or any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def log_stage(
    stage: str,
    tenant: str,
    event_ids: Iterable[str | None] = (),
    *,
    run_id: str | None = None,
    batch_id: str | None = None,
    **fields: Any,
) -> None:
    """The trail of one batch at one stage: an INFO line with its counts, and at DEBUG a
    line per event (read only when DEBUG is on: a batch holds thousands)."""
    if not trail_logger.isEnabledFor(logging.INFO):
        return
    common = {"tenant": tenant, "run_id": run_id, "batch_id": batch_id, "stage": stage}
    trail_logger.info("%s: %s", stage, _summary(fields), extra={_EXTRA: {**common, **fields}})
    if trail_logger.isEnabledFor(logging.DEBUG):
        shared = {**common, **{k: v for k, v in fields.items() if k != "events"}}
        for event_id in event_ids:
            if event_id is not None:
                line = {**shared, "event_id": event_id}
                trail_logger.debug("%s %s", stage, event_id, extra={_EXTRA: line})


def _summary(fields: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in fields.items()) or "done"


def trail_lines(trace: dict[str, Any]) -> Iterator[str]:
    """A `lily trace` result as log lines of the schema, one per step, oldest first."""
    base = {"logger": TRAIL_LOGGER, "level": "INFO", "tenant": trace["tenant"]}
    base["event_id"] = trace["event_id"]
    steps: list[dict[str, Any]] = []
    for copy in trace["copies"]:
        when = copy.get("received_at")
        steps.append({"time": when, "stage": "received", "origin": copy["origin"]})
        if copy.get("batch_id"):
            steps.append(
                {
                    "time": copy.get("landed_at"),
                    "stage": copy["state"] if copy["state"] != "applied" else "landed",
                    "batch_id": copy["batch_id"],
                    "run_id": copy.get("run_id"),
                }
            )
    for entry in trace["quarantined"]:
        steps.append({"time": entry["quarantined_at"], "stage": "quarantined", **entry})
    for change in trace["changes"]:
        deliveries = change.get("deliveries", [])
        step = {k: v for k, v in change.items() if k not in ("deliveries", "changed_at")}
        steps.append({"time": change["changed_at"], "stage": "applied", **step})
        for delivery in deliveries:
            steps.append({"time": change["changed_at"], "stage": "delivery", **delivery})
    if not steps:
        steps.append({"time": None, "stage": "unknown"})
    for step in steps:
        message = f"{step['stage']} {trace['event_id']}"
        yield log_line({**base, "message": message, **step})
