"""hub_records: the enriched events applied to the tenant's hub records."""

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetMaterialization,
    MaterializeResult,
    MetadataValue,
    RetryRequested,
    asset,
)

from lily_dagster.defs.ingest.assets import mark_replays_applied
from lily_dagster.defs.partitions import tenant_partitions
from lily_dagster.defs.resources import LilyResource
from lily_dagster.lib.hub.base import HubState, HubUnavailableError, MetadataHub, UpsertResult
from lily_dagster.lib.logs import log_stage
from lily_dagster.lib.metrics.updates import (
    PENDING_CHANGES,
    applied,
    event_delays,
    hub_requests,
)
from lily_dagster.lib.propagation import Position, position_path, record_change_head
from lily_dagster.lib.staging import batch_set_key


def seconds_since(events: pl.DataFrame, column: str, now: datetime) -> dict[str, float]:
    """Percentiles of (now - `column`) over a batch, in seconds, to 0.01 s."""
    if events.is_empty() or column not in events.columns:
        return {"p50": 0.0, "p95": 0.0}
    ages = events.select(
        (
            (pl.lit(now).cast(pl.Datetime("us", "UTC")) - pl.col(column)).dt.total_milliseconds()
            / 1000
        ).alias("s")
    ).get_column("s")
    return {
        "p50": round(float(ages.quantile(0.5) or 0.0), 2),
        "p95": round(float(ages.quantile(0.95) or 0.0), 2),
    }


def changes_table(sample: list[dict[str, str]]) -> str:
    """Records the hub wrote in this run, with the guids the hub gave them."""
    rows = [f"| `{r['qualified_name']}` | {r['change']} | `{r['guid']}` |" for r in sample]
    return "\n".join(["| qualified name | change | guid |", "|---|---|---|", *rows])


@asset(
    partitions_def=tenant_partitions,
    group_name="ingest",
    description="The tenant's records in the metadata hub (LocalHub or Atlan), upserted "
    "last-writer-wins by (event_time, event_id). A run over several tenants records a "
    "materialisation only for the tenants it had events of; a run of hub_records alone (from "
    "the UI) applies nothing and records each tenant's hub as it is.",
    ins={"landed_events": AssetIn(metadata={"columns": ["batch_id", "tenant"]})},
    kinds={"duckdb"},
    # A multi-tenant run records a materialisation per tenant it had events of (below), not
    # an output, which would record one for every partition of its range.
    output_required=False,
    # Writers to one hub share its API budget: `dagster instance concurrency set lily_hub N`
    # caps how many tenants write at once (Atlan: 400 requests/min for all of them).
    pool="lily_hub",
)
def hub_records(
    context: AssetExecutionContext,
    enriched_events: pl.DataFrame | None,
    landed_events: pl.DataFrame | None,
    lily: LilyResource,
) -> Iterator[AssetMaterialization | MaterializeResult]:
    recorded = tenant_records(context, enriched_events, landed_events, lily)
    if len(context.partition_keys) == 1:
        # A run of one tenant (a UI launch, a sweep, a replay) materialises the output as
        # usual, so checks selected with it (hub_records_gx_suite) run after it.
        for _, metadata in recorded:
            yield MaterializeResult(metadata=metadata)
        return
    for tenant, metadata in recorded:
        yield AssetMaterialization(asset_key="hub_records", partition=tenant, metadata=metadata)


def tenant_records(
    context: AssetExecutionContext,
    enriched_events: pl.DataFrame | None,
    landed_events: pl.DataFrame | None,
    lily: LilyResource,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(tenant, materialisation metadata) of each tenant this run has something to record
    of: what it applied, or the hub as it is."""
    hub, staging = lily.hub(), lily.staging()
    owner = context.run.root_run_id or context.run_id  # as landed_events claims
    tenants = context.partition_keys
    several = len(tenants) > 1
    for tenant in tenants:
        if enriched_events is None or landed_events is None:
            pending = len(staging.pending(tenant))
            yield tenant, {**hub_state(hub, tenant), "input": NO_INPUT, "pending_batches": pending}
            continue
        landed = landed_events.filter(pl.col("tenant") == tenant)
        if landed.is_empty() and several:
            continue  # a tenant of the range with nothing in this run: nothing to record
        # Only the batches this run still holds: a multi-tenant run leaves a tenant's
        # batches that would fail a blocking check to a run of the tenant alone
        # (validated_events), which may take them while this run goes on.
        landed_ids = sorted(set(landed.get_column("batch_id").to_list()))
        batch_ids = [b for b in landed_ids if staging.claimed_by(tenant, b) == owner]
        if not batch_ids and landed.height:
            yield tenant, {**hub_state(hub, tenant), "isolated_batches": ", ".join(landed_ids)}
            continue
        events = enriched_events.filter(
            (pl.col("tenant") == tenant) & pl.col("batch_id").is_in(batch_ids)
        )
        yield tenant, apply_to_hub(context, lily, hub, tenant, events, batch_ids)


# What a run of hub_records alone says of its input.
NO_INPUT = (
    "none: this run does not take landed events (launch tenant_ingest_job to process "
    "pending batches)"
)


def hub_state(hub: MetadataHub, tenant: str) -> dict[str, Any]:
    """The materialisation of a tenant whose hub this run did not change: the hub's figures
    as they are."""
    counts = hub.status_counts(tenant)
    return {
        "events_applied": 0,
        "hub_active": counts.get("ACTIVE", 0),
        "hub_deleted": counts.get("DELETED", 0),
        # The change log's head goes with every materialisation: propagation_sensor reads
        # it from the latest one of the tenant's partition.
        "change_seq": hub.last_change(tenant),
        "hub": MetadataValue.text(hub.name),
    }


def record_applied(
    lily: LilyResource,
    hub: MetadataHub,
    tenant: str,
    applied_events: int,
    received_at: pl.Series,
    result: UpsertResult,
    state: HubState,
    batch_ids: list[str],
    now: datetime,
) -> None:
    """The pipeline metrics of a batch set the hub took (once per batch set: a retried run
    does not count it again) and of the requests it took."""
    # Each event's delay from landing (or its Kafka timestamp) to visible in the hub.
    delays = event_delays(received_at, now.timestamp())
    taken = applied(tenant, applied_events, state.status_counts, delays)
    settings = lily.settings()
    for target in settings.config.targets_of(tenant):  # what each target has yet to get
        delivered = Position.load(position_path(settings.propagation_dir, tenant, target.name))
        taken.gauge(PENDING_CHANGES, {"tenant": tenant, "target": target.name},
                    max(0, state.last_change - delivered.delivered))  # fmt: skip
    metrics = lily.metrics()
    metrics.try_record(taken, key=f"applied:{tenant}:{batch_set_key(batch_ids)}")
    sent = {
        k.removeprefix("requests_"): n
        for k, n in result.details.items()
        if k.startswith("requests_")
    }
    metrics.try_record(hub_requests(hub.name, sent or {"ok": 1}))


def apply_to_hub(
    context: AssetExecutionContext,
    lily: LilyResource,
    hub: MetadataHub,
    tenant: str,
    enriched_events: pl.DataFrame,
    batch_ids: list[str],
) -> dict[str, Any]:
    """Upsert a tenant's events, then mark its batches applied; the materialisation's
    metadata for the tenant's partition."""
    try:
        result = hub.upsert(tenant, enriched_events)
    except HubUnavailableError as exc:
        lily.metrics().try_record(hub_requests(hub.name, {"failed": 1}))
        # Nothing is lost (the batch stays pending, the hub's outbox keeps what it did not
        # acknowledge): try the step again later; bad credentials and bugs fail at once.
        # The hub's upsert is idempotent, so tenants applied before this one are harmless
        # to apply again.
        settings = lily.settings()
        raise RetryRequested(
            max_retries=settings.hub_retries, seconds_to_wait=settings.hub_retry_wait_s
        ) from exc
    refused = 0
    if result.rejects is not None and result.rejects.height:
        refused = lily.quarantine().add(tenant, f"hub-{batch_set_key(batch_ids)}", result.rejects)
        context.log.warning(f"the hub refused {refused} events of {tenant}; see its quarantine")
    replayed = mark_replays_applied(lily, tenant, batch_ids)
    state = result.state or HubState(hub.status_counts(tenant), hub.last_change(tenant))
    change_seq = state.last_change
    record_change_head(lily.settings().propagation_dir, tenant, change_seq)
    now = datetime.now(UTC)
    applied_events = enriched_events.height - refused
    received_at = (
        enriched_events.get_column("received_at")
        if "received_at" in enriched_events.columns
        else pl.Series(dtype=pl.Datetime("us", "UTC"))
    )
    record_applied(lily, hub, tenant, applied_events, received_at, result, state, batch_ids, now)
    # Only now is the batch safe to forget: its valid events are in the hub and its
    # invalid ones in the quarantine.
    lily.staging().mark_applied(tenant, batch_ids, context.run_id)
    log_stage(
        "applied", tenant, enriched_events.get_column("event_id"), run_id=context.run_id,
        batch_id=",".join(batch_ids), events=applied_events, change_seq=change_seq,
    )  # fmt: skip
    # Freshness is Lily's own delay (landed or Kafka timestamp → visible in the hub); the
    # event's age also counts how late its source sent it.
    freshness = seconds_since(enriched_events, "received_at", now)
    age = seconds_since(enriched_events, "event_time", now)
    counts = state.status_counts
    return {
        "events_applied": enriched_events.height,
        "upserted": result.changed,
        "refused_by_hub": refused,
        "replayed_from_quarantine": replayed,
        **{f"records_{k}": v for k, v in result.as_dict().items()},
        **{f"hub_{k}": v for k, v in sorted(result.details.items())},
        "freshness_p50_s": freshness["p50"],
        "freshness_p95_s": freshness["p95"],
        "event_age_p50_s": age["p50"],
        "event_age_p95_s": age["p95"],
        "hub_active": counts.get("ACTIVE", 0),
        "hub_deleted": counts.get("DELETED", 0),
        # The change log's head: propagation_sensor compares it with each target's
        # position without opening the hub.
        "change_seq": change_seq,
        "hub": MetadataValue.text(hub.name),
        **(
            {"hub_changes": MetadataValue.md(changes_table(result.sample))} if result.sample else {}
        ),
    }
