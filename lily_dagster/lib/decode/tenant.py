"""validation's tenant rules (tenant_format, tenant_binding) on decoded events, and the
per-row origins a frame's events and rejects are filed under."""

from __future__ import annotations

import re

import polars as pl

from lily_dagster.lib.decode.partial import no_rejects
from lily_dagster.lib.decode.schema import NULL_BYTES, NULL_STR, ROW, TENANT_RULES
from lily_dagster.lib.envelope import EVENT_SCHEMA
from lily_dagster.lib.validation import envelope_rules

_ORIGIN_NUMBER = re.compile(r"(.*#)([0-9]+)")


def tenant_checks(events: pl.DataFrame, tenant: str | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """validation's tenant_format and tenant_binding rules on decoded events, first failing
    rule first: the events that pass, and the rejects of those that do not."""
    rules = [r for r in envelope_rules(tenant) if r.name in TENANT_RULES]
    if not events.height or not rules:
        return events, no_rejects()
    reason: pl.Expr = NULL_STR
    detail: pl.Expr = NULL_STR
    for rule in reversed(rules):
        bad = rule.bad.fill_null(True)
        reason = pl.when(bad).then(pl.lit(rule.reason.value)).otherwise(reason)
        detail = pl.when(bad).then(rule.detail).otherwise(detail)
    flagged = events.with_columns(reason.alias("__reason"), detail.alias("__detail"))
    failing = flagged.get_column("__reason").is_not_null()
    if not failing.any():
        return events, no_rejects()
    rejects = flagged.filter(failing).select(
        "event_id",
        pl.col("__reason").alias("reason"),
        pl.col("__detail").fill_null("").alias("detail"),
        "raw",
        NULL_BYTES.alias("raw_bytes"),
        "origin",
        ROW,
    )
    return flagged.filter(~failing).select(*EVENT_SCHEMA, ROW), rejects


def origin_series(origins: pl.Series | str, height: int) -> pl.Series:
    """Per-row origins: as given, or numbered on from a string `<where>#<n>` (`#1` when it
    carries no number)."""
    if isinstance(origins, pl.Series):
        if origins.len() != height:
            raise ValueError(f"{origins.len()} origins for {height} rows")
        return origins.cast(pl.String).alias("origin")
    match = _ORIGIN_NUMBER.fullmatch(origins)
    base, start = (match.group(1), int(match.group(2))) if match else (origins + "#", 1)
    numbers = pl.int_range(start, start + height, eager=True).cast(pl.String)
    return (base + numbers).alias("origin")
