"""kafka_events_sensor: Kafka → durable per-tenant landing → one run per tenant per tick."""

from typing import Any

import polars as pl
from dagster import (
    AssetSelection,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    in_process_executor,
    sensor,
)

from lily_dagster.defs.enrichment.assets import enriched_events
from lily_dagster.defs.hub.assets import hub_records
from lily_dagster.defs.hub.checks import hub_records_gx_suite
from lily_dagster.defs.ingest.assets import landed_events
from lily_dagster.defs.partitions import TENANTS, tenant_partitions
from lily_dagster.defs.resources import KafkaResource, LilyResource
from lily_dagster.defs.validation.assets import validated_events
from lily_dagster.defs.validation.quarantine import quarantined_events
from lily_dagster.lib.envelope import make_rejects
from lily_dagster.lib.kafka_source import (
    KafkaUnavailableError,
    dump_cursor,
    kafka_landed_frame,
    parse_cursor,
    read_batch,
    route_messages,
)
from lily_dagster.settings import UNROUTED_TENANT

# How long one tick may read Kafka (connecting and looking up the partitions' offsets
# included, a few ms each) before it lands what it has read. A read also ends once every
# partition has reported its end, but Tansu, whose watermarks lag, seldom reports an end while
# producers keep writing, so under steady traffic a tick reads for this whole bound (with 20 s
# it read for 2-20 s, and events waited that long before being landed). The whole tick (read,
# landing, run submission) must fit in the daemon's 5 s sensor loop: a tick still running
# when the loop comes round is skipped, and the next events wait a whole loop more. 2 s leaves
# room for an idle partition to report its end (~1 s on Tansu) and reads a 50k backlog (0.2 s).
KAFKA_READ_MAX_SECONDS = 2.0

# In-process: a micro-batch run is a few seconds of work, so a subprocess per step
# would double its latency.
INGEST_ASSETS = [landed_events, validated_events, enriched_events, hub_records, quarantined_events]
tenant_ingest_job = define_asset_job(
    "tenant_ingest_job",
    selection=AssetSelection.assets(*INGEST_ASSETS) - AssetSelection.checks(hub_records_gx_suite),
    partitions_def=tenant_partitions,
    executor_def=in_process_executor,
    description="Landed events of one tenant → validated → enriched → hub.",
)
quarantine_replay_job = define_asset_job(
    "quarantine_replay_job",
    selection=AssetSelection.assets(*INGEST_ASSETS) - AssetSelection.checks(hub_records_gx_suite),
    partitions_def=tenant_partitions,
    executor_def=in_process_executor,
    config={"ops": {"landed_events": {"config": {"replay": True, "replay_reasons": []}}}},
    tags={"lily/source": "replay"},
    description="Sends a tenant's quarantined events (all, or the reasons given in "
    "replay_reasons) through every gate again; those that fail again return to the quarantine.",
)


def ingest_run_request(tenant: str, batch_id: str, source: str) -> RunRequest:
    """The run that processes one landed batch of one tenant; shared by every source."""
    return RunRequest(
        run_key=f"{batch_id}:{tenant}",
        partition_key=tenant,
        run_config={"ops": {"landed_events": {"config": {"batch_ids": [batch_id]}}}},
        tags={"lily/tenant": tenant, "lily/batch": batch_id, "lily/source": source},
    )


def land_and_request_runs(
    context: SensorEvaluationContext,
    lily: LilyResource,
    source: str,
    batch_id: str,
    frames: dict[str, pl.DataFrame],
    details: dict[str, Any],
    cursor: str,
) -> SensorResult:
    """Land each tenant's frame durably, then (only then) return the moved cursor with one
    run request per tenant and any new tenant partitions. Every source ends its tick here."""
    staging = lily.staging()
    for tenant, frame in frames.items():
        staging.land(tenant, batch_id, source, frame, details)
    known = set(context.instance.get_dynamic_partitions(TENANTS))
    added = sorted(set(frames) - known)
    context.log.info(
        f"landed {sum(f.height for f in frames.values())} {source} events as {batch_id} "
        f"for {sorted(frames)}"
    )
    return SensorResult(
        run_requests=[ingest_run_request(t, batch_id, source) for t in sorted(frames)],
        cursor=cursor,
        dynamic_partitions_requests=[tenant_partitions.build_add_request(added)] if added else [],
    )


@sensor(
    job=tenant_ingest_job,
    # As often as the daemon allows: Dagster's sensor loop evaluates sensors every 5 s at
    # most, so in practice a tick starts every ~5 s.
    minimum_interval_seconds=1,
    default_status=DefaultSensorStatus.RUNNING,
    description="Reads the watched Kafka topics from the offsets in its cursor, lands each "
    "tenant's events durably, then requests one run per tenant.",
)
def kafka_events_sensor(
    context: SensorEvaluationContext, kafka: KafkaResource, lily: LilyResource
) -> SensorResult | SkipReason:
    settings = lily.settings()
    bootstrap, topics = kafka.resolved()
    cursor = parse_cursor(context.cursor)
    try:
        batch = read_batch(
            bootstrap,
            topics,
            cursor,
            settings.max_batch_events,
            max_seconds=KAFKA_READ_MAX_SECONDS,
        )
    except KafkaUnavailableError as exc:
        # Cursor untouched: the next tick resumes at the same offsets.
        return SkipReason(f"{exc}; will retry from the same offsets")
    if batch.missing_topics:
        context.log.warning(f"topics not on the broker yet: {batch.missing_topics}")
    if not batch.messages:
        return SensorResult(
            skip_reason=f"no new events (lag {batch.lag})", cursor=dump_cursor(batch.next_cursor)
        )
    routed = route_messages(batch.messages, settings.topic_bindings())
    batch_id = batch.batch_id()
    if routed.unrouted:
        rejects = make_rejects(
            UNROUTED_TENANT,
            [
                (None, reason, detail, m.value.decode("utf-8", "replace"), m.origin)
                for m, reason, detail in routed.unrouted
            ],
        )
        lily.quarantine().add(UNROUTED_TENANT, batch_id, rejects)
        context.log.warning(f"{len(routed.unrouted)} messages named no valid tenant")
    return land_and_request_runs(
        context,
        lily,
        "kafka",
        batch_id,
        {tenant: kafka_landed_frame(messages) for tenant, messages in routed.by_tenant.items()},
        {"kafka_ranges": batch.ranges(), "kafka_lag": batch.lag},
        # Moved only once everything read is durably landed or quarantined.
        dump_cursor(batch.next_cursor),
    )
