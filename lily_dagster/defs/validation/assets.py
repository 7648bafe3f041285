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
from lily_dagster.lib.validation import check_payloads, rule_names

DECODE_CHECK = "envelope_decodes"
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
            f"rule_{name}",
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


def _share_check(
    name: str, failures: int, rows: int, limit: float, min_rows: int
) -> AssetCheckResult:
    share = failures / rows if rows else 0.0
    return AssetCheckResult(
        check_name=name,
        # A share of a handful of events is noise: only batches of min_rows or more block.
        passed=rows < min_rows or share <= limit,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "failures": failures,
            "rows": rows,
            "share": round(share, 4),
            "limit": limit,
            "min_rows": min_rows,
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
    tenant = context.partition_key
    settings = lily.settings()
    checked = check_payloads(
        landed_events.get_column("value").to_list(),
        landed_events.get_column("origin").to_list(),
        tenant,
        settings.max_event_bytes,
    )
    valid = checked.valid.join(
        landed_events.select("origin", "batch_id"), on="origin", how="left", maintain_order="left"
    )
    rejects = checked.rejects
    key = batch_set_key(landed_events.get_column("batch_id"))
    kept = lily.quarantine().add(tenant, f"validation-{key}", rejects)
    by_reason = {r: int(n) for r, n in rejects.group_by("reason").len().sort("reason").iter_rows()}
    if kept:
        context.log.warning(f"{kept} events quarantined for {tenant}: {by_reason}")
    yield Output(
        valid,
        metadata={
            "events_in": landed_events.height,
            "valid": valid.height,
            "quarantined": kept,
            "quarantined_by_reason": MetadataValue.json(by_reason),
            "rule_failures": MetadataValue.json(checked.failures_by_rule),
        },
    )
    limit, min_rows = settings.block_reject_share, settings.block_min_events
    yield _share_check(DECODE_CHECK, checked.unparsed, landed_events.height, limit, min_rows)
    for name in rule_names():
        failures = checked.failures_by_rule.get(name, 0)
        yield _share_check(f"rule_{name}", failures, checked.parsed, limit, min_rows)
    yield _parents_check(valid, lily, tenant)


def _parents_check(valid: pl.DataFrame, lily: LilyResource, tenant: str) -> AssetCheckResult:
    columns = valid.filter(
        (pl.col("type_name") == "Column") & pl.col("parent_qualified_name").is_not_null()
    )
    parents = set(columns.get_column("parent_qualified_name").to_list())
    missing = parents - set(valid.get_column("qualified_name").to_list())
    if missing:
        missing -= lily.hub().contains(tenant, sorted(missing))
    waiting = columns.filter(pl.col("parent_qualified_name").is_in(sorted(missing))).height
    return AssetCheckResult(
        check_name=PARENTS_CHECK,
        passed=not waiting,
        severity=AssetCheckSeverity.WARN,
        metadata={"columns": columns.height, "columns_without_parent_yet": waiting},
    )
