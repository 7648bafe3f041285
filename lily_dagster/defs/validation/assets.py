"""validated_events: envelopes that pass every rule; the rest go to the tenant's quarantine.

Each rule is also a blocking asset check: its failures are counted per batch, and when more
than LILY_BLOCK_REJECT_SHARE of a batch of at least LILY_BLOCK_MIN_EVENTS fails one rule, the
check fails and gates the upsert (the batch stays pending for an operator). Rejected rows are
quarantined either way.
"""

from collections.abc import Iterator

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    MetadataValue,
    Output,
    asset,
)

from lily_dagster.defs.partitions import tenant_partitions
from lily_dagster.defs.resources import LilyResource
from lily_dagster.lib.staging import batch_set_key
from lily_dagster.lib.validation import (
    DECODE_CHECK,
    blocking_checks,
    blocking_counts,
    check_payloads,
    rule_check,
    rule_names,
    share_passes,
)

PARENTS_CHECK = "columns_have_parents"

_CHECKS = [
    AssetCheckSpec(
        DECODE_CHECK,
        asset="validated_events",
        blocking=True,
        description="Payloads parse as envelopes (JSON, fields, types, op, event_time).",
    ),
    *[
        AssetCheckSpec(
            rule_check(name),
            asset="validated_events",
            blocking=True,
            description=f"Row-level rule {name}; failing rows are quarantined.",
        )
        for name in rule_names()
    ],
    AssetCheckSpec(
        PARENTS_CHECK,
        asset="validated_events",
        description="Columns whose table is neither in the batch nor in the hub yet (they are "
        "kept, never rejected for arriving first; a warning only).",
    ),
]


def _check_result(
    name: str, counts: dict[str, dict[str, tuple[int, int]]], limit: float, min_rows: int
) -> AssetCheckResult:
    """One check's result over the run's tenants: it passes when it passes for each."""
    failures = sum(c[name][0] for c in counts.values())
    rows = sum(c[name][1] for c in counts.values())
    return AssetCheckResult(
        check_name=name,
        passed=all(share_passes(*c[name], limit, min_rows) for c in counts.values()),
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "failures": failures,
            "rows": rows,
            "share": round(failures / rows if rows else 0.0, 4),
            "limit": limit,
            "min_rows": min_rows,
            **(
                {"by_tenant": MetadataValue.json({t: list(c[name]) for t, c in counts.items()})}
                if len(counts) > 1
                else {}
            ),
        },
    )


@asset(
    partitions_def=tenant_partitions,
    group_name="validation",
    description="Landed events parsed as envelopes (CONTRACT.md §1) that pass every rule; "
    "every rejected event is kept in the tenant's quarantine with its reason.",
    check_specs=_CHECKS,
    kinds={"polars"},
)
def validated_events(
    context: AssetExecutionContext, landed_events: pl.DataFrame, lily: LilyResource
) -> Iterator[Output[pl.DataFrame] | AssetCheckResult]:
    settings = lily.settings()
    limit, min_rows = settings.block_reject_share, settings.block_min_events
    # A run of several tenants does not let one tenant's failing check hold back the others:
    # that tenant's batches are left untouched to a run of the tenant alone (the sensors
    # request it), where the check fails and blocks the upsert as it always did.
    several = len(context.partition_keys) > 1
    counts: dict[str, dict[str, tuple[int, int]]] = {}
    parts: list[pl.DataFrame] = []
    columns = waiting = 0
    for tenant in context.partition_keys:
        landed = landed_events.filter(pl.col("tenant") == tenant)
        checked = check_payloads(
            landed.get_column("value").to_list(),
            landed.get_column("origin").to_list(),
            tenant,
            settings.max_event_bytes,
        )
        tenant_counts = blocking_counts(checked, landed.height)
        failing = sorted(
            n for n, c in tenant_counts.items() if not share_passes(*c, limit, min_rows)
        )
        batch_ids = sorted(set(landed.get_column("batch_id").to_list()))
        if several and failing:
            lily.staging().isolate(tenant, batch_ids, context.run_id)
            context.log.warning(
                f"{tenant}: {failing} would block; its batches {batch_ids} are left to a run "
                f"of {tenant} alone"
            )
            context.add_asset_metadata(
                {"events_in": landed.height, "valid": 0, "isolated_by_checks": ", ".join(failing)},
                partition_key=tenant,
            )
            continue
        counts[tenant] = tenant_counts
        valid = checked.valid.join(
            landed.select("origin", "batch_id"), on="origin", how="left", maintain_order="left"
        )
        rejects = checked.rejects
        kept = lily.quarantine().add(tenant, f"validation-{batch_set_key(batch_ids)}", rejects)
        by_reason = {
            r: int(n) for r, n in rejects.group_by("reason").len().sort("reason").iter_rows()
        }
        if kept:
            context.log.warning(f"{kept} events quarantined for {tenant}: {by_reason}")
        parts.append(valid)
        tenant_columns, tenant_waiting = _columns_waiting(valid, lily, tenant)
        columns += tenant_columns
        waiting += tenant_waiting
        context.add_asset_metadata(
            {
                "events_in": landed.height,
                "valid": valid.height,
                "quarantined": kept,
                "quarantined_by_reason": MetadataValue.json(by_reason),
                "rule_failures": MetadataValue.json(checked.failures_by_rule),
            },
            partition_key=tenant,
        )
    if not parts:  # every tenant of the run was left to a run of its own
        empty = check_payloads([], [], context.partition_keys[0], settings.max_event_bytes)
        parts.append(empty.valid.with_columns(pl.lit(None, pl.String).alias("batch_id")))
    yield Output(pl.concat(parts, how="vertical"))
    for name in blocking_checks():
        yield _check_result(name, counts, limit, min_rows)
    yield AssetCheckResult(
        check_name=PARENTS_CHECK,
        passed=not waiting,
        severity=AssetCheckSeverity.WARN,
        metadata={"columns": columns, "columns_without_parent_yet": waiting},
    )


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
