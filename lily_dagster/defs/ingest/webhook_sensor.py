"""webhook_inbox_sensor: the webhook inbox → the same landing and runs as Kafka."""

import polars as pl
from dagster import DefaultSensorStatus, SensorEvaluationContext, SensorResult, SkipReason, sensor

from lily_dagster.defs.ingest.sensors import land_and_request_runs, tenant_ingest_job
from lily_dagster.defs.resources import LilyResource
from lily_dagster.lib.webhooks.inbox import SqliteInbox, StoredEvent, landed_frame_of


@sensor(
    job=tenant_ingest_job,
    minimum_interval_seconds=1,
    default_status=DefaultSensorStatus.RUNNING,
    description="Reads the webhook inbox after the sequence number in its cursor, lands each "
    "tenant's events durably, then requests one run per tenant.",
)
def webhook_inbox_sensor(
    context: SensorEvaluationContext, lily: LilyResource
) -> SensorResult | SkipReason:
    settings = lily.settings()
    if not settings.inbox_path.exists():
        return SkipReason("no webhook inbox yet (start `lily webhook serve`)")
    inbox = SqliteInbox(settings.inbox_path)
    after = int(context.cursor or 0)
    events = inbox.read_after(after, settings.max_batch_events)
    if not events:
        return SkipReason(f"no new webhook events after #{after}")
    first, last = events[0].seq, events[-1].seq
    by_tenant: dict[str, list[StoredEvent]] = {}
    for event in events:
        by_tenant.setdefault(event.tenant, []).append(event)
    frames: dict[str, pl.DataFrame] = {t: landed_frame_of(evs) for t, evs in by_tenant.items()}
    result = land_and_request_runs(
        context,
        lily,
        "webhook",
        f"webhook-{first:012d}-{last:012d}",
        frames,
        {"inbox_range": [first, last], "inbox_backlog": inbox.depth_after(last)},
        str(last),
    )
    inbox.set_consumer_seq(last)
    return result
