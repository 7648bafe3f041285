"""The reference's checks as expressions: what pydantic refuses in each field (a missing
value, a wrong type), in the order it reports them, and the first that fails in each row."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import polars as pl

from lily_dagster.lib.decode.facts import Field
from lily_dagster.lib.decode.schema import MISSING, NOT_ARRAY, NOT_STRING, TRUE
from lily_dagster.lib.reasons import Reason


@dataclass(frozen=True)
class Check:
    bad: pl.Expr
    reason: Reason
    detail: str | pl.Expr  # what pydantic says (an expression where it names an item)


def string_checks(
    field: Field | None, loc: str, wrong: Reason = Reason.WRONG_TYPE, message: str = NOT_STRING
) -> list[Check]:
    """A required string: missing where null or absent, `wrong` where of another type."""
    if field is None or field.dtype == pl.Null:
        return [Check(TRUE, Reason.MISSING_FIELD, f"{loc}: {MISSING}")]
    checks = []
    if field.facts.nulls:
        checks.append(Check(field.expr.is_null(), Reason.MISSING_FIELD, f"{loc}: {MISSING}"))
    if field.dtype != pl.String:
        checks.append(Check(field.expr.is_not_null(), wrong, f"{loc}: {message}"))
    return checks


def optional_string_checks(field: Field | None, loc: str) -> list[Check]:
    """An optional string: null is absent, another type is wrong."""
    if field is None or field.dtype in (pl.Null, pl.String):
        return []
    return [Check(field.expr.is_not_null(), Reason.WRONG_TYPE, f"{loc}: {NOT_STRING}")]


def list_checks(field: Field | None, loc: str) -> list[Check]:
    """An optional list of strings: null is absent; a null item or a non-string one is not
    (pydantic names the first such item)."""
    if field is None or field.dtype == pl.Null:
        return []
    expr, dtype = field.expr, field.dtype
    if isinstance(dtype, pl.List):
        if dtype.inner == pl.String:
            if not field.facts.item_nulls:
                return []
            bad = expr.list.drop_nulls().list.len() != expr.list.len()
            item = expr.list.eval(pl.element().is_null()).list.arg_max()
            detail = pl.format(f"{loc}.{{}}: {NOT_STRING}", item)
            return [Check(bad, Reason.WRONG_TYPE, detail)]
        # any item of another type (a null included) is not a string
        return [Check(expr.list.len() > 0, Reason.WRONG_TYPE, f"{loc}.0: {NOT_STRING}")]
    return [Check(expr.is_not_null(), Reason.WRONG_TYPE, f"{loc}: {NOT_ARRAY}")]


def first_failing(checks: Sequence[Check]) -> pl.Expr:
    """Index of the first failing check, null when none fails."""
    if not checks:
        return pl.lit(None, dtype=pl.Int32)
    chain: Any = pl.when(checks[0].bad.fill_null(False)).then(pl.lit(0, dtype=pl.Int32))
    for i, check in enumerate(checks[1:], start=1):
        chain = chain.when(check.bad.fill_null(False)).then(pl.lit(i, dtype=pl.Int32))
    return cast(pl.Expr, chain.otherwise(pl.lit(None, dtype=pl.Int32)))


def failing_detail(checks: Sequence[Check]) -> pl.Expr | None:
    """The detail of the first failing check, where some check words it per row."""
    if all(isinstance(c.detail, str) for c in checks):
        return None
    chain: Any = None
    for check in checks:
        detail = pl.lit(check.detail) if isinstance(check.detail, str) else check.detail
        when = check.bad.fill_null(False)
        chain = pl.when(when).then(detail) if chain is None else chain.when(when).then(detail)
    return cast(pl.Expr, chain.otherwise(pl.lit(None, dtype=pl.String)))
