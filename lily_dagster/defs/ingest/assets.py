"""landed_events: the raw payloads a source landed for a tenant, as one micro-batch."""

import hashlib
from datetime import UTC, datetime

import polars as pl
from dagster import AssetExecutionContext, AssetKey, Config, Output, asset

from lily_dagster.defs.partitions import tenant_partitions
from lily_dagster.defs.resources import LilyResource
from lily_dagster.lib.access.decision import Action
from lily_dagster.lib.audit import operator_action, run_subject
from lily_dagster.lib.envelope import quarantine_id
from lily_dagster.lib.quarantine import message_of, payload_bytes
from lily_dagster.lib.staging import LANDED_SCHEMA, empty_landed


class LandedEventsConfig(Config):
    """Which landed batches to process; empty means every pending batch of the tenant.
    With `coalesce` (the sensors' runs), also every pending batch of the tenant that no other
    run took: batches landed while this run was queued ride along, so the sensors request no
    second run for a tenant whose run is still queued.
    With `replay`, the tenant's quarantined events (of `replay_reasons`, or all) are landed
    as a new batch first and go through every gate again.
    A run over a range of tenant partitions (the sensors' multi-tenant runs) processes only
    the partitions in `tenants` (all of the range when empty); the others are no-ops."""

    batch_ids: list[str] = []
    coalesce: bool = False
    replay: bool = False
    replay_reasons: list[str] = []
    tenants: list[str] = []


# The batch ids of quarantine replays: validated_events judges them event by event.
REPLAY_BATCH_PREFIX = "replay-"


def land_replay(lily: LilyResource, tenant: str, reasons: list[str]) -> tuple[str | None, int]:
    """Land the quarantined events of `tenant` (optionally only `reasons`) as a batch; returns
    the batch id (None when there was nothing) and the count. They leave the quarantine only
    once hub_records has applied the batch (see mark_replays_applied)."""
    quarantine = lily.quarantine()
    entries = quarantine.read(tenant, reasons or None)
    if entries.is_empty():
        return None, 0
    now = datetime.now(UTC)
    ids = entries.get_column("quarantine_id").to_list()
    digest = hashlib.sha256((now.isoformat() + ",".join(ids)).encode()).hexdigest()[:20]
    batch_id = f"{REPLAY_BATCH_PREFIX}{digest}"
    frame = entries.select(
        (pl.col("origin").fill_null("quarantine") + "#replay").alias("origin"),
        payload_bytes().alias("value"),  # byte for byte as they arrived
        pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("received_at"),
    ).cast(LANDED_SCHEMA)  # type: ignore[arg-type]
    lily.staging().land(tenant, batch_id, "replay", frame, {"replayed_reasons": reasons or "all"})
    return batch_id, len(ids)


def audited_replay(
    context: AssetExecutionContext, lily: LilyResource, tenant: str, reasons: list[str]
) -> tuple[str | None, int]:
    """land_replay, with its entry in the tenant's audit log (CONTRACT.md §6): one per
    replay, from the CLI (its operator in the run's tag) or the UI."""
    query = f"?reasons={','.join(reasons)}" if reasons else ""
    with operator_action(
        lily.settings(),
        tenant,
        Action.QUARANTINE_REPLAY,
        f"quarantine{query}@run:{context.run_id}",
        sub=run_subject(context.run.tags),
    ):
        return land_replay(lily, tenant, reasons)


def mark_replays_applied(lily: LilyResource, tenant: str, batch_ids: list[str]) -> int:
    """For replay batches the hub has just applied: their events leave the quarantine, unless
    they were rejected again during this run (after the batch was landed)."""
    replays = [b for b in batch_ids if b.startswith(REPLAY_BATCH_PREFIX)]
    if not replays:
        return 0
    frame, manifests = lily.staging().read(tenant, replays)
    landed_at = {m.batch_id: datetime.fromisoformat(m.landed_at) for m in manifests}
    marked = 0
    for batch_id, part in frame.group_by("batch_id"):
        ids = [quarantine_id(v) for v in part.get_column("value").to_list()]
        messages = [message_of(o) for o in part.get_column("origin").to_list()]
        lily.quarantine().mark_replayed(
            tenant, str(batch_id[0]), ids, landed_at[str(batch_id[0])], messages
        )
        marked += len(ids)
    return marked


_NOTHING = {"events_in": 0, "batches": 0, "kafka_lag": 0, "replayed_from_quarantine": 0}


def run_reaches_hub(context: AssetExecutionContext) -> bool:
    """Whether this run also materialises hub_records (every run of the ingest jobs does; a
    materialisation of landed_events alone from the UI does not)."""
    selection = context.run.asset_selection  # empty or None: the whole job
    return not selection or AssetKey("hub_records") in selection


@asset(
    partitions_def=tenant_partitions,
    group_name="ingest",
    description="Raw event payloads landed durably by a source (Kafka, webhook inbox, "
    "poller, quarantine replay) for a tenant, not yet applied to the hub. A run may cover "
    "several tenant partitions (the sensors' multi-tenant runs): each gets its own "
    "materialisation and metadata.",
    kinds={"polars", "kafka"},
)
def landed_events(
    context: AssetExecutionContext, config: LandedEventsConfig, lily: LilyResource
) -> Output[pl.DataFrame]:
    staging = lily.staging()
    owner = context.run.root_run_id or context.run_id
    reaches_hub = run_reaches_hub(context)
    frames: list[pl.DataFrame] = []
    for tenant in context.partition_keys:
        if config.tenants and tenant not in config.tenants:
            # The same figures as a tenant of the run, at zero: plots have no gaps.
            context.add_asset_metadata(
                {**_NOTHING, "batch_ids": "none (not in this run)"}, partition_key=tenant
            )
            continue
        if not reaches_hub:
            # Taking batches in a run that cannot apply them would strand them: only report.
            context.add_asset_metadata(
                {
                    **_NOTHING,
                    "pending_batches": len(staging.pending(tenant)),
                    "batch_ids": "none (this run does not materialise hub_records, so it "
                    "takes no batch: launch tenant_ingest_job to process pending batches)",
                },
                partition_key=tenant,
            )
            continue
        batch_ids = list(config.batch_ids)
        replayed = 0
        if config.replay:
            replay_batch, replayed = audited_replay(context, lily, tenant, config.replay_reasons)
            batch_ids = [replay_batch] if replay_batch else []
            context.log.info(f"replaying {replayed} quarantined events of {tenant}")
        elif not batch_ids:
            batch_ids = staging.pending(tenant)
        elif config.coalesce:
            batch_ids = sorted(set(batch_ids) | set(staging.unclaimed(tenant, owner)))
        # A re-execution of this run takes the same batches again; other coalescing runs do
        # not.
        staging.claim(tenant, batch_ids, owner)
        frame, manifests = staging.read(tenant, batch_ids)
        frames.append(frame.with_columns(pl.lit(tenant, pl.String).alias("tenant")))
        ids = [m.batch_id for m in manifests]
        skipped = sorted(set(batch_ids) - set(ids))
        if skipped:
            context.log.info(f"batches of {tenant} already applied, skipped: {skipped}")
        lag = max((int(m.details.get("kafka_lag", 0)) for m in manifests), default=0)
        context.add_asset_metadata(
            {
                "events_in": frame.height,
                "batches": len(manifests),
                "batch_ids": ", ".join(ids) or "none",
                "kafka_lag": lag,
                "replayed_from_quarantine": replayed,
            },
            partition_key=tenant,
        )
    return Output(pl.concat(frames, how="vertical") if frames else empty_landed())
