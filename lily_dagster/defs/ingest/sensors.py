"""kafka_events_sensor: Kafka → durable per-tenant landing → one run per tick for the
tenants that need one (a run over the range of their tenant partitions)."""

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import polars as pl
from dagster import (
    AssetSelection,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    in_process_executor,
    sensor,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    RUN_KEY_TAG,
)

from lily_dagster.defs.enrichment.assets import enriched_events
from lily_dagster.defs.hub.assets import hub_records
from lily_dagster.defs.hub.checks import SCHEDULED_CHECKS
from lily_dagster.defs.ingest.assets import landed_events
from lily_dagster.defs.ingest.recovery import IN_FLIGHT, died, release_dead_runs_batches
from lily_dagster.defs.partitions import TENANTS, tenant_partitions
from lily_dagster.defs.resources import KafkaResource, LilyResource
from lily_dagster.defs.validation.assets import validated_events
from lily_dagster.defs.validation.quarantine import quarantined_events
from lily_dagster.lib.crypto import KmsUnavailableError, keyring
from lily_dagster.lib.envelope import make_rejects
from lily_dagster.lib.kafka_source import (
    KafkaUnavailableError,
    OffsetReset,
    dump_cursor,
    kafka_landed_frame,
    offset_resets_path,
    parse_cursor,
    read_batch,
    record_offset_resets,
    route_messages,
)
from lily_dagster.lib.metrics.updates import kafka_lag
from lily_dagster.lib.staging import StagingArea, batch_set_key
from lily_dagster.settings import UNROUTED_TENANT

# How long one tick may read Kafka (connecting and looking up the partitions' offsets
# included, a few ms each) before it lands what it has read. A read also ends once every
# partition has reported its end, but Tansu, whose watermarks lag, seldom reports an end while
# producers keep writing, so under steady traffic a tick reads for this whole bound (with 20 s
# it read for 2-20 s, and events waited that long before being landed). The whole tick (read,
# landing, run submission) must fit in the daemon's 5 s sensor loop: a tick still running
# when the loop comes round is skipped, and the next events wait a whole loop more. With 2 s,
# plus creating the tick's runs (0.4-2 s each on 2 busy cores), ticks ran past 5 s under
# 1,000 events/s across 3 tenants and every other one was skipped; 1 s still reads a 50k
# backlog (0.2 s), and an idle partition that has not reported its end (~1 s on Tansu) only
# ends the read at the bound, which nothing but `drained` depends on.
KAFKA_READ_MAX_SECONDS = 1.0

# In-process: a micro-batch run is a few seconds of work, so a subprocess per step
# would double its latency.
INGEST_ASSETS = [landed_events, validated_events, enriched_events, hub_records, quarantined_events]
tenant_ingest_job = define_asset_job(
    "tenant_ingest_job",
    selection=AssetSelection.assets(*INGEST_ASSETS) - AssetSelection.checks(*SCHEDULED_CHECKS),
    executor_def=in_process_executor,
    description="Landed events of a tenant → validated → enriched → hub. The sensors run "
    "every tenant with new events of a tick in one run, over the range of their partitions.",
)
quarantine_replay_job = define_asset_job(
    "quarantine_replay_job",
    selection=AssetSelection.assets(*INGEST_ASSETS) - AssetSelection.checks(*SCHEDULED_CHECKS),
    executor_def=in_process_executor,
    config={"ops": {"landed_events": {"config": {"replay": True, "replay_reasons": []}}}},
    tags={"lily/source": "replay"},
    description="Sends a tenant's quarantined events (all, or the reasons given in "
    "replay_reasons) through every gate again; those that fail again return to the quarantine.",
)


# As often as the daemon allows: Dagster's sensor loop comes round every 5 s, so a tick
# starts every ~5 s. 4 s, not 5, so that a loop that comes round a few ms early is not
# skipped (the daemon skips a tick under the minimum interval), and the UI's "Frequency"
# says about what happens (it said ~1 sec).
SENSOR_INTERVAL_S = 4

# Runs over several tenants name them here (comma-separated).
MULTI_TENANT_TAG = "lily/tenants"
# The block of tenant partitions a tick's run belongs to (see ingest_run_requests):
# dagster.yaml runs one run of a block at a time, so two runs never share a tenant.
TENANT_BLOCK_TAG = "lily/tenant-block"

# A pending batch that no run took this long after it landed, while no run of its tenant is
# in flight, gets a run of its own: the run it was left to was cancelled or failed before
# taking it. Long enough that a run another sensor requested for it exists by then.
SWEEP_AFTER_S = 30.0

# Runs whose process has not listed the pending batches yet (it does so in landed_events,
# after the run's PIPELINE_START), so a batch landed now is still taken by them.
NOT_YET_TAKING = (
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.STARTING,
)


def ingest_run_request(tenant: str, batch_id: str, source: str, block: int) -> RunRequest:
    """The run that processes one landed batch of one tenant, and every other pending batch
    of the tenant that no other run took when it starts; shared by every source."""
    return RunRequest(
        run_key=f"{batch_id}:{tenant}",
        partition_key=tenant,
        run_config={
            "ops": {"landed_events": {"config": {"batch_ids": [batch_id], "coalesce": True}}}
        },
        tags={
            "lily/tenant": tenant,
            TENANT_BLOCK_TAG: str(block),
            "lily/batch": batch_id,
            "lily/source": source,
        },
    )


def tenant_blocks(
    tenants: list[str], partition_order: list[str], block_size: int
) -> dict[int, list[str]]:
    """`tenants` by block of `block_size` consecutive tenant partitions (in
    `partition_order`, the dynamic partitions' order, where a tenant keeps its place)."""
    position = {tenant: i for i, tenant in enumerate(partition_order)}
    blocks: dict[int, list[str]] = {}
    for tenant in sorted(tenants, key=position.__getitem__):
        blocks.setdefault(position[tenant] // block_size, []).append(tenant)
    return blocks


def ingest_run_requests(
    tenants: list[str], batch_id: str, source: str, partition_order: list[str], block_size: int
) -> list[RunRequest]:
    """One run for the batch of every tenant in `tenants` of each block of `block_size`
    tenant partitions (LILY_RUN_MAX_TENANTS; a run costs ~2 s to start whatever its size,
    then ~0.1-0.2 s per tenant): a run of the tenant's partition for one tenant, else a run
    over the range of tenant partitions from the first to the last of them, told by config
    which of the range's tenants it processes. Runs of one block run one at a time (their
    tag); runs of different blocks, disjoint ranges, side by side (dagster.yaml)."""
    requests: list[RunRequest] = []
    for block, members in tenant_blocks(tenants, partition_order, block_size).items():
        if len(members) == 1:
            requests.append(ingest_run_request(members[0], batch_id, source, block))
        else:
            requests.append(_range_run_request(members, block, batch_id, source))
    return requests


def _range_run_request(tenants: list[str], block: int, batch_id: str, source: str) -> RunRequest:
    """A run over the range of tenant partitions from tenants[0] to tenants[-1] (in the
    partitions' order), processing those tenants only."""
    names = sorted(tenants)
    return RunRequest(
        run_key=f"{batch_id}:{'+'.join(names)}",
        run_config={
            "ops": {
                "landed_events": {
                    "config": {"batch_ids": [batch_id], "coalesce": True, "tenants": names}
                }
            }
        },
        tags={
            ASSET_PARTITION_RANGE_START_TAG: tenants[0],
            ASSET_PARTITION_RANGE_END_TAG: tenants[-1],
            MULTI_TENANT_TAG: ",".join(names),
            TENANT_BLOCK_TAG: str(block),
            "lily/batch": batch_id,
            "lily/source": source,
        },
    )


def run_tenants(run: DagsterRun) -> list[str]:
    """The tenants a run of the ingest jobs processes."""
    if run.tags.get(MULTI_TENANT_TAG):
        return run.tags[MULTI_TENANT_TAG].split(",")
    tenant = run.tags.get("dagster/partition") or run.tags.get("lily/tenant")
    return [tenant] if tenant else []


def isolated_run_requests(instance: DagsterInstance, staging: StagingArea) -> list[RunRequest]:
    """A run of the tenant alone for the batches a multi-tenant run left to one because they
    would fail a blocking check (validated_events); its run key names them, so once only
    (again only if that run died)."""
    requests: list[RunRequest] = []
    for tenant in staging.tenants_with_pending():
        isolated = staging.isolated(tenant)
        if not isolated:
            continue
        requests.append(
            RunRequest(
                run_key=attempt_run_key(instance, f"isolate-{batch_set_key(isolated)}:{tenant}"),
                partition_key=tenant,
                run_config={"ops": {"landed_events": {"config": {"batch_ids": isolated}}}},
                tags={"lily/tenant": tenant, "lily/batch": isolated[0], "lily/source": "isolate"},
            )
        )
    return requests


def _takes_new_batches(run: DagsterRun) -> bool:
    """Whether the run's landed_events takes pending batches it was not requested for."""
    config: Any = run.run_config
    for key in ("ops", "landed_events", "config"):
        config = config.get(key) if isinstance(config, Mapping) else None
    config = config or {}
    if config.get("replay"):
        return False
    return bool(config.get("coalesce")) or not config.get("batch_ids")


def ingest_runs_in_flight(instance: DagsterInstance) -> dict[str, list[DagsterRun]]:
    """Runs of the ingest jobs not yet ended, by tenant."""
    jobs = {tenant_ingest_job.name, quarantine_replay_job.name}
    by_tenant: dict[str, list[DagsterRun]] = {}
    for run in instance.get_runs(RunsFilter(statuses=list(IN_FLIGHT))):
        if run.job_name in jobs:
            for tenant in run_tenants(run):
                by_tenant.setdefault(tenant, []).append(run)
    return by_tenant


def tenants_with_waiting_run(runs: dict[str, list[DagsterRun]]) -> set[str]:
    """Tenants with a run that will take a batch landed now (see NOT_YET_TAKING)."""
    return {
        tenant
        for tenant, tenant_runs in runs.items()
        if any(r.status in NOT_YET_TAKING and _takes_new_batches(r) for r in tenant_runs)
    }


def attempt_run_key(instance: DagsterInstance, key: str) -> str:
    """`key`, or `key:aN` once the runs of every earlier attempt died. Dagster skips a
    request whose run key a run already has, and a run that died before claiming its
    batches (killed while starting, or in its first step) leaves no release to change the
    key: without a new attempt its batches would wait for good. A run in flight, done, or
    failed in a step keeps its key, so Dagster skips the request (no retry storm)."""
    candidate, attempt = key, 0
    while runs := instance.get_runs(RunsFilter(tags={RUN_KEY_TAG: candidate}), limit=1):
        if not died(instance, runs[0].run_id):
            return candidate
        attempt += 1
        candidate = f"{key}:a{attempt}"
    return candidate


def sweep_run_requests(
    instance: DagsterInstance,
    staging: StagingArea,
    runs: dict[str, list[DagsterRun]],
    exclude: set[str],
) -> list[RunRequest]:
    """A run for each tenant (not in `exclude`) whose pending batches no run took and no run
    will take (SWEEP_AFTER_S), those of runs that died included (recovery.py); its run key
    names the batches and how often they were released, so each set is tried once per
    release."""
    known = set(instance.get_dynamic_partitions(TENANTS))
    requests: list[RunRequest] = []
    for tenant in staging.tenants_with_pending():
        if tenant in exclude or tenant in runs or tenant not in known:
            continue
        # Batches a dead run held go at once: no other run was requested for them.
        released = release_dead_runs_batches(instance, staging, [tenant]).get(tenant, [])
        stranded = sorted({*staging.unclaimed(tenant, min_age_s=SWEEP_AFTER_S), *released})
        if not stranded:
            continue
        dead = sorted({run for b in stranded for run in staging.releases(tenant, b)})
        releases = sum(len(staging.releases(tenant, b)) for b in stranded)
        key = f"sweep-{batch_set_key(stranded)}:{tenant}" + (f":r{releases}" if releases else "")
        requests.append(
            RunRequest(
                run_key=attempt_run_key(instance, key),
                partition_key=tenant,
                run_config={
                    "ops": {"landed_events": {"config": {"batch_ids": stranded, "coalesce": True}}}
                },
                tags={
                    "lily/tenant": tenant,
                    "lily/batch": stranded[0],
                    "lily/source": "sweep",
                    **({"lily/recovered_from": ",".join(dead)[:200]} if dead else {}),
                },
            )
        )
    return requests


def unlock_keys(lily: LilyResource, tenants: Iterable[str]) -> None:
    """Each tenant's data key unwrapped (made, for a new tenant) before the tick writes
    anything: a key service that does not answer (KmsUnavailableError) then skips the tick
    with nothing landed and the source's position unmoved. Unwrapped keys are held by the
    process, so only a new tenant or a restarted process needs the key service."""
    ring = keyring(lily.settings())
    for tenant in tenants:
        ring.cipher(tenant)


def key_service_down(exc: KmsUnavailableError, position: str) -> SkipReason:
    return SkipReason(f"key service unavailable ({exc}); nothing landed, {position}")


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
    run request per tenant and any new tenant partitions. Every source ends its tick here.
    KmsUnavailableError before anything is landed when a data key cannot be had."""
    unlock_keys(lily, frames)
    staging = lily.staging()
    for tenant, frame in frames.items():
        staging.land(tenant, batch_id, source, frame, details)
    known = list(context.instance.get_dynamic_partitions(TENANTS))
    added = sorted(set(frames) - set(known))
    # Looked up only once the batches are landed: a run that has not started its steps yet
    # will take them (landed_events with `coalesce`), so its tenant needs no second run.
    runs = ingest_runs_in_flight(context.instance)
    waiting = tenants_with_waiting_run(runs)
    coalesced = sorted(set(frames) & waiting)
    context.log.info(
        f"landed {sum(f.height for f in frames.values())} {source} events as {batch_id} "
        f"for {sorted(frames)}"
        + (f"; left to the runs already queued for {coalesced}" if coalesced else "")
    )
    requests = [
        *ingest_run_requests(
            sorted(set(frames) - waiting),
            batch_id,
            source,
            [*known, *added],
            lily.settings().run_max_tenants,
        ),
        *sweep_run_requests(context.instance, staging, runs, exclude=set(frames)),
        *isolated_run_requests(context.instance, staging),
    ]
    return SensorResult(
        run_requests=requests,
        # The tick shows why it requested no run (else Dagster says "empty result").
        skip_reason=None if requests else f"landed {batch_id}; the queued runs take it",
        cursor=cursor,
        dynamic_partitions_requests=[tenant_partitions.build_add_request(added)] if added else [],
    )


# Tag of the runs requested by a tick that found Kafka offsets reset: "topic/partition
# cursor>new start", comma-separated.
OFFSET_RESET_TAG = "lily/kafka_offset_resets"


def report_offset_resets(
    context: SensorEvaluationContext, lily: LilyResource, resets: list[OffsetReset]
) -> None:
    """Log each reset on the tick (ERROR, with its offsets) and record it durably in
    $LILY_HOME/kafka/offset_resets.jsonl, where `lily run` finds it."""
    if not resets:
        return
    record_offset_resets(offset_resets_path(lily.settings().home), resets, datetime.now(UTC))
    for reset in resets:
        context.log.error(f"Kafka offsets reset, events lost: {reset.describe()}")


def noting_offset_resets(result: SensorResult, resets: list[OffsetReset]) -> SensorResult:
    """The tick's result showing its resets: in its skip reason when it requests no run,
    else as a tag of each run it requests."""
    if not resets:
        return result
    if result.run_requests:
        tag = ",".join(f"{r.topic}/{r.partition} {r.cursor}>{r.low}" for r in resets)[:200]
        requests = [
            r.with_replaced_attrs(tags={**r.tags, OFFSET_RESET_TAG: tag})
            if isinstance(r, RunRequest)
            else r
            for r in result.run_requests
        ]
        return result._replace(run_requests=requests)
    note = f"Kafka offsets reset, events lost: {'; '.join(r.describe() for r in resets)}"
    skip = result.skip_reason
    return result._replace(skip_reason=SkipReason(f"{skip.skip_message}; {note}" if skip else note))


def no_new_events(watermark_lag: int) -> str:
    """A tick that read nothing: the broker's own lag figure only when it reports one (Tansu's
    watermarks trail its log, so a read that ends at its bound says nothing of a lag)."""
    if watermark_lag:
        return f"no new events (the broker reports {watermark_lag} behind)"
    return "no new events"


@sensor(
    job=tenant_ingest_job,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=DefaultSensorStatus.RUNNING,
    description="Reads the watched Kafka topics from the offsets in its cursor, lands each "
    "tenant's events durably, then requests one run for the tenants with new events.",
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
    # Recorded before the cursor moves past them: a tick that dies reports them again.
    report_offset_resets(context, lily, batch.resets)
    lily.metrics().try_record(kafka_lag(batch.lag_by_topic()))
    if not batch.messages:
        staging = lily.staging()
        sweep = [
            *sweep_run_requests(
                context.instance, staging, ingest_runs_in_flight(context.instance), set()
            ),
            *isolated_run_requests(context.instance, staging),
        ]
        if sweep:
            context.log.warning(
                f"pending batches no run took: runs for {[r.partition_key for r in sweep]}"
            )
            return noting_offset_resets(
                SensorResult(run_requests=sweep, cursor=dump_cursor(batch.next_cursor)),
                batch.resets,
            )
        return noting_offset_resets(
            SensorResult(
                skip_reason=no_new_events(batch.watermark_lag()),
                cursor=dump_cursor(batch.next_cursor),
            ),
            batch.resets,
        )
    routed = route_messages(batch.messages, settings.topic_bindings())
    try:
        unlock_keys(lily, [*routed.by_tenant, *([UNROUTED_TENANT] if routed.unrouted else [])])
    except KmsUnavailableError as exc:  # cursor untouched: the same events come again
        return key_service_down(exc, "will retry from the same offsets")
    batch_id = batch.batch_id()
    if routed.unrouted:
        rejects = make_rejects(
            UNROUTED_TENANT,
            [
                (u.event_id, u.reason, u.detail, u.message.value, u.message.origin)  # byte for byte
                for u in routed.unrouted
            ],
        )
        lily.quarantine().add(UNROUTED_TENANT, batch_id, rejects)
        context.log.warning(f"{len(routed.unrouted)} messages named no valid tenant")
    details: dict[str, Any] = {"kafka_ranges": batch.ranges(), "kafka_lag": batch.lag}
    if batch.resets:
        details["kafka_offset_resets"] = [r.describe() for r in batch.resets]
    result = land_and_request_runs(
        context,
        lily,
        "kafka",
        batch_id,
        {tenant: kafka_landed_frame(messages) for tenant, messages in routed.by_tenant.items()},
        details,
        # Moved only once everything read is durably landed or quarantined.
        dump_cursor(batch.next_cursor),
    )
    return noting_offset_resets(result, batch.resets)
