"""webhook_inbox_sensor: the webhook inbox → the same landing and runs as Kafka."""

import hashlib

import polars as pl
from dagster import DefaultSensorStatus, SensorEvaluationContext, SensorResult, SkipReason, sensor

from lily_dagster.defs.ingest.sensors import (
    SENSOR_INTERVAL_S,
    key_service_down,
    land_and_request_runs,
    tenant_ingest_job,
)
from lily_dagster.defs.resources import LilyResource
from lily_dagster.lib.crypto import KmsUnavailableError
from lily_dagster.lib.inbox import StoredEvent, inbox_exists, landed_frame_of, open_inbox


@sensor(
    job=tenant_ingest_job,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=DefaultSensorStatus.RUNNING,
    description="Reads the webhook inbox after the position in its cursor, lands each "
    "tenant's events durably, then requests one run per tenant.",
)
def webhook_inbox_sensor(
    context: SensorEvaluationContext, lily: LilyResource
) -> SensorResult | SkipReason:
    settings = lily.settings()
    if not inbox_exists(settings):
        return SkipReason("no webhook inbox yet (start `lily webhook serve`)")
    inbox = open_inbox(settings)
    # A key service that does not answer (opening the inbox's sealed payloads, sealing the
    # landed batch) skips the tick: the inbox keeps the events, the next tick reads them.
    try:
        page = inbox.read(context.cursor, settings.max_batch_events)
        if not page.events or page.cursor is None:
            return SkipReason(f"no new webhook events after {context.cursor or 'the start'}")
        by_tenant: dict[str, list[StoredEvent]] = {}
        for event in page.events:
            by_tenant.setdefault(event.tenant, []).append(event)
        frames: dict[str, pl.DataFrame] = {t: landed_frame_of(e) for t, e in by_tenant.items()}
        span = f"{context.cursor or ''}..{page.cursor}"
        result = land_and_request_runs(
            context,
            lily,
            "webhook",
            f"webhook-{hashlib.sha256(span.encode()).hexdigest()[:20]}",
            frames,
            {
                "inbox_range": [context.cursor, page.cursor],
                "inbox_backlog": inbox.pending(page.cursor),
            },
            page.cursor,
        )
    except KmsUnavailableError as exc:
        return key_service_down(exc, f"will retry after {context.cursor or 'the start'}")
    inbox.set_consumer_cursor(page.cursor)
    return result
