"""Row-level validation rules on events frames, vectorised in polars.

Each rule is an expression that is true for a *bad* row, with its reason code and a detail
text. `split_valid` applies them all and splits the frame; the first failing rule (in
declaration order) names the reason.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl

from lily_dagster.lib.envelope import decode_envelopes, empty_rejects, to_rejects
from lily_dagster.lib.reasons import Reason
from lily_dagster.settings import TENANT_PATTERN

MAX_NAME_CHARS = 1_024
MAX_QUALIFIED_NAME_CHARS = 4_096
MAX_EVENT_ID_CHARS = 256
TYPE_NAME_PATTERN = r"^[A-Z][A-Za-z0-9_]{0,127}$"


@dataclass(frozen=True)
class Rule:
    name: str
    reason: Reason
    bad: pl.Expr  # true where the row breaks the rule
    detail: pl.Expr  # why, for the quarantine record


def _empty(col: str) -> pl.Expr:
    return pl.col(col).str.strip_chars().str.len_chars() == 0


# Atlan qualified names of SQL assets: default/<connector>/<epoch>/<db>/<schema>/<table>/<column>
QUALIFIED_NAME_SEGMENTS = {
    "Connection": 3,
    "Database": 4,
    "Schema": 5,
    "Table": 6,
    "View": 6,
    "MaterialisedView": 6,
    "Column": 7,
}
# event_time must fall in [EARLIEST_EVENT_TIME, now + MAX_FUTURE]: clocks drift, not by years.
EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
MAX_FUTURE = timedelta(days=1)


def type_rules() -> list[Rule]:
    """Per-type rules: the qualified name's structure and its parent."""
    segments = pl.col("type_name").replace_strict(
        QUALIFIED_NAME_SEGMENTS, default=None, return_dtype=pl.Int64
    )
    parent = pl.col("parent_qualified_name")
    return [
        Rule(
            "qualified_name_structure",
            Reason.BAD_QUALIFIED_NAME,
            segments.is_not_null()
            & (
                (pl.col("qualified_name").str.split("/").list.len() != segments)
                | ~pl.col("qualified_name").str.starts_with("default/")
            ),
            pl.format(
                "a {} qualified name has {} segments default/<connector>/<epoch>/…, got {}",
                pl.col("type_name"),
                segments,
                pl.col("qualified_name"),
            ),
        ),
        Rule(
            "parent_is_prefix",
            Reason.PARENT_MISMATCH,
            parent.is_not_null()
            & pl.col("type_name").is_in(list(QUALIFIED_NAME_SEGMENTS))
            & ~pl.col("qualified_name").str.starts_with(parent + "/"),
            pl.format("parent {} is not a prefix of {}", parent, pl.col("qualified_name")),
        ),
    ]


def time_rule(now: datetime) -> Rule:
    latest = now + MAX_FUTURE
    return Rule(
        "event_time_window",
        Reason.BAD_EVENT_TIME,
        (pl.col("event_time") < EARLIEST_EVENT_TIME) | (pl.col("event_time") > latest),
        pl.format(
            "event_time {} is outside [{}, now + 1 day]",
            pl.col("event_time").dt.to_string("%Y-%m-%dT%H:%M:%SZ"),
            pl.lit(EARLIEST_EVENT_TIME.date().isoformat()),
        ),
    )


def all_rules(expected_tenant: str | None, now: datetime | None = None) -> tuple[Rule, ...]:
    """Every row-level rule: the envelope's, the per-type ones and the time window."""
    return (*envelope_rules(expected_tenant), time_rule(now or datetime.now(UTC)))


def rule_names() -> list[str]:
    """The names of all rules, tenant binding included (each counted by RULES_CHECK)."""
    return [r.name for r in all_rules("x")]


@functools.lru_cache(maxsize=1024)
def envelope_rules(expected_tenant: str | None) -> tuple[Rule, ...]:
    rules = [
        Rule(
            "tenant_format",
            Reason.BAD_TENANT,
            ~pl.col("tenant").str.contains(TENANT_PATTERN),
            pl.format("tenant {} does not match {}", pl.col("tenant"), pl.lit(TENANT_PATTERN)),
        ),
    ]
    if expected_tenant is not None:
        rules.append(
            Rule(
                "tenant_binding",
                Reason.TENANT_MISMATCH,
                pl.col("tenant") != expected_tenant,
                pl.format(
                    "event names tenant {} but arrived for tenant {}",
                    pl.col("tenant"),
                    pl.lit(expected_tenant),
                ),
            )
        )
    for col in ("event_id", "type_name", "qualified_name", "name"):
        rules.append(
            Rule(f"{col}_not_empty", Reason.EMPTY_FIELD, _empty(col), pl.lit(f"{col} is empty"))
        )
    for col, limit in (
        ("event_id", MAX_EVENT_ID_CHARS),
        ("name", MAX_NAME_CHARS),
        ("qualified_name", MAX_QUALIFIED_NAME_CHARS),
    ):
        rules.append(
            Rule(
                f"{col}_bounded",
                Reason.FIELD_TOO_LONG,
                pl.col(col).str.len_chars() > limit,
                pl.format(f"{col} has {{}} characters, over {limit}", pl.col(col).str.len_chars()),
            )
        )
    rules.append(
        Rule(
            "type_name_format",
            Reason.BAD_TYPE_NAME,
            ~pl.col("type_name").str.contains(TYPE_NAME_PATTERN),
            pl.format("type_name {} is not an Atlan type name", pl.col("type_name")),
        )
    )
    return (*rules, *type_rules())


@dataclass(frozen=True)
class ValidationResult:
    valid: pl.DataFrame
    rejects: pl.DataFrame  # REJECT_SCHEMA
    failures_by_rule: dict[str, int]


def split_valid(
    events: pl.DataFrame, rules: Sequence[Rule], tenant: str | None
) -> ValidationResult:
    """Split `events` into the rows that pass every rule and the rejects with their reasons."""
    flags = [r.bad.fill_null(True).alias(f"__bad_{i}") for i, r in enumerate(rules)]
    counts = events.select(e.sum() for e in flags).row(0) if events.height else (0,) * len(rules)
    failures = {r.name: int(n or 0) for r, n in zip(rules, counts, strict=True)}
    if not any(counts):  # the common case: one pass, cheap even for one-event webhook posts
        return ValidationResult(events, empty_rejects(), failures)
    flagged = events.with_columns(flags)
    reason = pl.lit(None, dtype=pl.String)
    detail = pl.lit(None, dtype=pl.String)
    for i, r in reversed(list(enumerate(rules))):  # first failing rule wins
        reason = pl.when(pl.col(f"__bad_{i}")).then(pl.lit(r.reason.value)).otherwise(reason)
        detail = pl.when(pl.col(f"__bad_{i}")).then(r.detail).otherwise(detail)
    flagged = flagged.with_columns(reason.alias("__reason"), detail.alias("__detail"))
    bad_cols = [f"__bad_{i}" for i in range(len(rules))]
    valid = flagged.filter(pl.col("__reason").is_null()).drop([*bad_cols, "__reason", "__detail"])
    bad = flagged.filter(pl.col("__reason").is_not_null())
    rejects = to_rejects(
        bad.select(
            pl.col("event_id"),
            pl.col("__reason").alias("reason"),
            pl.col("__detail").fill_null("").alias("detail"),
            pl.col("raw"),
            pl.col("origin"),
        ),
        tenant,
    )
    return ValidationResult(valid, rejects, failures)


@dataclass(frozen=True)
class PayloadCheck:
    valid: pl.DataFrame  # EVENT_SCHEMA
    rejects: pl.DataFrame  # REJECT_SCHEMA: payloads that are not envelopes, then rule failures
    parsed: int  # payloads that are envelopes
    unparsed: int  # payloads that are not
    failures_by_rule: dict[str, int]


def check_payloads(
    payloads: Sequence[bytes | str], origins: Sequence[str], tenant: str, max_event_bytes: int
) -> PayloadCheck:
    """Raw payloads for `tenant` decoded and put through every rule: the one gate that Kafka,
    webhook and replayed events all pass."""
    decoded = decode_envelopes(payloads, origins, tenant=tenant, max_event_bytes=max_event_bytes)
    checked = split_valid(decoded.events, all_rules(expected_tenant=tenant), tenant)
    parts = [r for r in (decoded.rejects, checked.rejects) if r.height]
    return PayloadCheck(
        valid=checked.valid,
        rejects=pl.concat(parts) if parts else decoded.rejects,
        parsed=decoded.events.height,
        unparsed=decoded.rejects.height,
        failures_by_rule=checked.failures_by_rule,
    )


# The blocking check of a batch, one for every rule: a check's evaluation is a Dagster event
# per tenant partition per run, so one check per rule wrote 15 events a tenant (issue 18).
RULES_CHECK = "validation_rules"
# The pseudo-rule of payloads that do not parse as envelopes, judged with the rules.
DECODES = "envelope_decodes"


def rule_counts(checked: PayloadCheck, events_in: int) -> dict[str, tuple[int, int]]:
    """(failures, rows) of each rule over a tenant's batch: DECODES for the payloads that do
    not parse, each row-level rule on the parsed ones."""
    return {
        DECODES: (checked.unparsed, events_in),
        **{name: (checked.failures_by_rule.get(name, 0), checked.parsed) for name in rule_names()},
    }


def failing_rules(counts: dict[str, tuple[int, int]], limit: float, min_rows: int) -> list[str]:
    """The rules whose share of failures blocks the batch (see share_passes)."""
    return sorted(name for name, c in counts.items() if not share_passes(*c, limit, min_rows))


def share_passes(failures: int, rows: int, limit: float, min_rows: int) -> bool:
    """Whether a blocking check passes: a share of a handful of events is noise, so only
    batches of `min_rows` or more block, when more than `limit` of them fail."""
    share = failures / rows if rows else 0.0
    return rows < min_rows or share <= limit
