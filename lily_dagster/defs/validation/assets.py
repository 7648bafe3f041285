"""validated_events: envelopes that pass every rule; the rest go to the tenant's quarantine.

One blocking asset check, `validation_rules`, judges every rule of a tenant's events at once
and reports each rule's failures in its metadata: when more than LILY_BLOCK_REJECT_SHARE of a
batch of at least LILY_BLOCK_MIN_EVENTS fails one rule, the check fails and gates the upsert
(the batch stays pending for an operator). A quarantine replay is judged event by event
instead: it is mostly invalid events by nature. Rejected rows are quarantined either way. The
check is evaluated per tenant partition. (It was one check per rule until issue 18: each
check's evaluation is a Dagster event per tenant per run, 15 a tenant, the bulk of a
100-tenant run's event writes.)
"""

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import polars as pl
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    MetadataValue,
    Output,
    PreviewWarning,
    asset,
)

# Not exported at the top level; the target of a check's evaluation, which the UI needs.
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from lily_dagster.defs.ingest.assets import REPLAY_BATCH_PREFIX
from lily_dagster.defs.partitions import tenant_partitions
from lily_dagster.defs.resources import LilyResource
from lily_dagster.lib.logs import log_stage
from lily_dagster.lib.metrics.updates import stage
from lily_dagster.lib.staging import batch_set_key
from lily_dagster.lib.validation import (
    DECODES,
    RULES_CHECK,
    check_payloads,
    failing_rules,
    rule_counts,
    rule_names,
)
from lily_dagster.settings import Settings

VALIDATED = AssetKey("validated_events")

# Evaluated per tenant partition (a multi-tenant run reports one evaluation per tenant), so
# the check's page in the UI shows each tenant's outcome. Dagster calls partitioned checks a
# preview: its warning would be printed by every process that loads the definitions, the
# daemon's and each run's, so it is silenced here, for this only.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", PreviewWarning)
    _CHECKS = [
        AssetCheckSpec(
            RULES_CHECK,
            asset="validated_events",
            blocking=True,
            partitions_def=tenant_partitions,
            description="Every rule on the tenant's events: payloads parse as envelopes "
            f"(envelope_decodes), then the row-level rules ({', '.join(rule_names())}). "
            "Failing rows are quarantined; the check fails, and blocks the upsert, when one "
            "rule fails more than LILY_BLOCK_REJECT_SHARE of a batch. Its metadata counts "
            "each rule's failures, and columns whose table has not arrived yet (a warning "
            "only: they are kept).",
        ),
    ]

REPLAY_JUDGEMENT = "event by event (a quarantine replay: its share of invalid events is natural)"


@dataclass
class _TenantOutcome:
    valid: pl.DataFrame
    counts: dict[str, tuple[int, int]]
    replay: bool
    columns: int
    waiting: int
    quarantined: int


def _evaluation(
    tenant: str,
    outcome: _TenantOutcome,
    limit: float,
    min_rows: int,
    target: AssetCheckEvaluationTargetMaterializationData | None,
) -> AssetCheckEvaluation:
    """The check's outcome for one tenant's events of the run: every rule's counts."""
    counts = outcome.counts
    failing = failing_rules(counts, limit, min_rows)
    shares = {name: (f / rows if rows else 0.0) for name, (f, rows) in counts.items()}
    worst = max(shares, key=lambda name: shares[name])
    return AssetCheckEvaluation(
        asset_key=VALIDATED,
        check_name=RULES_CHECK,
        passed=outcome.replay or not failing,
        severity=AssetCheckSeverity.ERROR,
        blocking=True,
        partition=tenant,
        target_materialization_data=target,
        metadata={
            "failing_rules": MetadataValue.text(", ".join(failing) or "none"),
            "rows": counts[DECODES][1],
            "worst_rule": MetadataValue.text(worst),
            "worst_share": round(shares[worst], 4),
            "limit": limit,
            "min_rows": min_rows,
            "judged": REPLAY_JUDGEMENT if outcome.replay else "by share of the batch",
            **{f"failures_{name}": failures for name, (failures, _) in counts.items()},
            "columns": outcome.columns,
            "columns_without_parent_yet": outcome.waiting,
        },
    )


@asset(
    partitions_def=tenant_partitions,
    group_name="ingest",
    description="Landed events parsed as envelopes (CONTRACT.md §1) that pass every rule; "
    "every rejected event is kept in the tenant's quarantine with its reason.",
    check_specs=_CHECKS,
    kinds={"polars"},
)
def validated_events(
    context: AssetExecutionContext, landed_events: pl.DataFrame | None, lily: LilyResource
) -> Iterator[Output[Any] | AssetCheckEvaluation]:
    if landed_events is None:  # landed_events is not part of this run: no check to evaluate
        for tenant in context.partition_keys:
            context.add_asset_metadata(
                {"events_in": 0, "input": "none (landed_events is not part of this run)"},
                partition_key=tenant,
            )
        yield Output(None)
        yield from _check_outputs(context)
        return
    settings = lily.settings()
    outcomes: dict[str, _TenantOutcome] = {}
    for tenant in context.partition_keys:
        landed = landed_events.filter(pl.col("tenant") == tenant)
        outcome = _validate_tenant(context, lily, settings, tenant, landed)
        if outcome is not None:
            outcomes[tenant] = outcome
    parts = [o.valid for o in outcomes.values()]
    if not parts:  # no tenant of the run had events for the next step
        parts.append(_empty_valid(context.partition_keys[0], settings.max_event_bytes))
    yield Output(pl.concat(parts, how="vertical"))
    yield from _check_outputs(context)
    _log_quarantined(context, outcomes)
    limit, min_rows = settings.block_reject_share, settings.block_min_events
    targets = _materialisations_of_run(context)
    for tenant, outcome in outcomes.items():
        yield _evaluation(tenant, outcome, limit, min_rows, targets.get(tenant))


def _materialisations_of_run(
    context: AssetExecutionContext,
) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """Each tenant's materialisation of validated_events this run just stored, which its
    evaluation checks (without it the UI shows the tenant's check as never run against its
    latest materialisation): one query for the run, not one per tenant."""
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=VALIDATED, asset_partitions=list(context.partition_keys)),
        limit=len(context.partition_keys),
    ).records
    targets: dict[str, AssetCheckEvaluationTargetMaterializationData] = {}
    for record in records:  # newest first: this run's, one a partition of its range
        entry = record.event_log_entry
        if entry.run_id != context.run_id or record.partition_key in targets:
            continue
        targets[str(record.partition_key)] = AssetCheckEvaluationTargetMaterializationData(
            run_id=entry.run_id, storage_id=record.storage_id, timestamp=record.timestamp
        )
    return targets


def _log_quarantined(context: AssetExecutionContext, outcomes: dict[str, _TenantOutcome]) -> None:
    """One log line for the run's quarantined events (each line is a Dagster event: one a
    tenant was 100 events at 100 tenants); each tenant's reasons are in its metadata."""
    kept = {tenant: o.quarantined for tenant, o in outcomes.items() if o.quarantined}
    if not kept:
        return
    shown = ", ".join(f"{tenant} {n}" for tenant, n in sorted(kept.items())[:20])
    more = f" and {len(kept) - 20} tenants more" if len(kept) > 20 else ""
    context.log.warning(f"{sum(kept.values())} events quarantined: {shown}{more}")


def _log_trail(
    run_id: str, tenant: str, batch_ids: list[str], valid: pl.DataFrame, rejects: pl.DataFrame
) -> None:
    """The batches' trail lines: valid, and quarantined by reason (lib/logs.py)."""
    batches = ",".join(batch_ids)
    ids = valid.get_column("event_id")
    log_stage("valid", tenant, ids, run_id=run_id, batch_id=batches, events=valid.height)
    for (reason,), group in rejects.group_by("reason", maintain_order=True):
        ids = group.get_column("event_id")
        log_stage(
            "quarantined", tenant, ids, run_id=run_id, batch_id=batches, reason=reason,
            events=group.height,
        )  # fmt: skip


def _empty_valid(tenant: str, max_event_bytes: int) -> pl.DataFrame:
    empty = check_payloads([], [], tenant, max_event_bytes)
    return empty.valid.with_columns(
        pl.lit(None, pl.String).alias("batch_id"),
        pl.lit(None, pl.Datetime("us", "UTC")).alias("received_at"),
    )


def _check_outputs(context: AssetExecutionContext) -> Iterator[Output[None]]:
    """The checks' own outputs (what Dagster makes of an AssetCheckResult), yielded once: the
    evaluations that follow are per tenant partition, which an AssetCheckResult cannot be."""
    selected = context.selected_asset_check_keys
    for output_name, spec in context.assets_def.check_specs_by_output_name.items():
        if spec.key in selected:
            yield Output(None, output_name=output_name)


def _validate_tenant(
    context: AssetExecutionContext,
    lily: LilyResource,
    settings: Settings,
    tenant: str,
    landed: pl.DataFrame,
) -> _TenantOutcome | None:
    """A tenant's landed events through every rule: rejects to its quarantine, its
    metadata recorded; None when a multi-tenant run leaves the tenant to a run of its own."""
    limit, min_rows = settings.block_reject_share, settings.block_min_events
    checked = check_payloads(
        landed.get_column("value").to_list(),
        landed.get_column("origin").to_list(),
        tenant,
        settings.max_event_bytes,
    )
    counts = rule_counts(checked, landed.height)
    batch_ids = sorted(set(landed.get_column("batch_id").to_list()))
    replay = bool(batch_ids) and all(b.startswith(REPLAY_BATCH_PREFIX) for b in batch_ids)
    failing = failing_rules(counts, limit, min_rows)
    # A run of several tenants does not let one tenant's failing check hold back the others:
    # that tenant's batches are left untouched to a run of the tenant alone (the sensors
    # request it), where the check fails and blocks the upsert as it always did.
    if len(context.partition_keys) > 1 and failing and not replay:
        lily.staging().isolate(tenant, batch_ids, context.run_id)
        context.log.warning(
            f"{tenant}: {failing} would block; its batches {batch_ids} are left to a run "
            f"of {tenant} alone"
        )
        context.add_asset_metadata(
            {"events_in": landed.height, "valid": 0, "isolated_by_checks": ", ".join(failing)},
            partition_key=tenant,
        )
        return None
    valid = checked.valid.join(
        landed.select("origin", "batch_id", "received_at"),
        on="origin",
        how="left",
        maintain_order="left",
    )
    rejects = checked.rejects
    kept = lily.quarantine().add(tenant, f"validation-{batch_set_key(batch_ids)}", rejects)
    _log_trail(context.run_id, tenant, batch_ids, valid, rejects)
    lily.metrics().try_record(
        stage(tenant, "valid", valid.height), key=f"valid:{tenant}:{batch_set_key(batch_ids)}"
    )
    by_reason = {r: int(n) for r, n in rejects.group_by("reason").len().sort("reason").iter_rows()}
    columns, waiting = _columns_waiting(valid, lily, tenant)
    context.add_asset_metadata(
        {
            "events_in": landed.height,
            "valid": valid.height,
            "quarantined": kept,
            "quarantined_by_reason": MetadataValue.json(by_reason),
            "rule_failures": MetadataValue.json(checked.failures_by_rule),
            "columns_without_parent_yet": waiting,
            **({"judged": REPLAY_JUDGEMENT} if replay else {}),
        },
        partition_key=tenant,
    )
    return _TenantOutcome(valid, counts, replay, columns, waiting, kept)


def _columns_waiting(valid: pl.DataFrame, lily: LilyResource, tenant: str) -> tuple[int, int]:
    """Columns of the batch whose table is neither in the batch nor in the hub yet."""
    columns = valid.filter(
        (pl.col("type_name") == "Column") & pl.col("parent_qualified_name").is_not_null()
    )
    parents = set(columns.get_column("parent_qualified_name").to_list())
    missing = parents - set(valid.get_column("qualified_name").to_list())
    if missing:
        missing -= lily.hub().contains(tenant, sorted(missing))
    return columns.height, columns.filter(
        pl.col("parent_qualified_name").is_in(sorted(missing))
    ).height
