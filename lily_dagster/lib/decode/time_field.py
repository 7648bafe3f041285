"""event_time in a nested or flattened frame: text (read as the reference reads it), a
timestamp (valid with a zone), a date, or anything else (invalid). Gives its checks, the
event's value, its member of `raw`, and the rows the reference decodes."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from lily_dagster.lib.decode.checks import Check
from lily_dagster.lib.decode.event_time import event_times, time_parts, year_guard
from lily_dagster.lib.decode.facts import Field
from lily_dagster.lib.decode.json_text import Member, key
from lily_dagster.lib.decode.schema import MISSING, NOT_TIME, TIME_TEXT, TRUE
from lily_dagster.lib.reasons import Reason

_NULL_TIME = pl.lit(None, dtype=pl.Datetime("us", "UTC"))


@dataclass
class TimeField:
    value: pl.Expr = _NULL_TIME  # the event's event_time
    bad: pl.Expr = TRUE  # rows whose value the reference refuses
    member: Member | None = None  # `"event_time":…` in raw (None: written as the column is)
    checks: list[Check] = field(default_factory=list)
    fallback: list[pl.Expr] = field(default_factory=list)  # rows left to the reference


def time_field(time: Field | None) -> TimeField:
    """event_time of a frame whose `event_time` column is `time`."""
    missing = Check(TRUE, Reason.MISSING_FIELD, f"event_time: {MISSING}")
    if time is None or time.dtype == pl.Null:
        return TimeField(checks=[missing])
    if time.dtype == pl.String and time.series is not None:
        read = _text(time, time.series)
    elif isinstance(time.dtype, pl.Datetime):
        read = _timestamp(time, time.dtype)
    elif time.dtype == pl.Date:
        date = time.expr.dt.to_string("%Y-%m-%d")
        read = TimeField(member=Member([key("event_time"), '"', date, '"'], time.facts.nulls))
    else:
        read = TimeField()
    if time.facts.nulls:
        read.checks.append(Check(time.expr.is_null(), missing.reason, missing.detail))
    if not read.bad.meta.eq(pl.lit(False)):
        detail: str | pl.Expr = f"event_time: {NOT_TIME}"
        if time.dtype == pl.String:  # its text, for the words of fromisoformat
            detail = pl.concat_str([pl.lit(TIME_TEXT), time.expr])
        read.checks.append(Check(read.bad, Reason.BAD_EVENT_TIME, detail))
    return read


def _text(time: Field, texts: pl.Series) -> TimeField:
    """RFC 3339 text: raw keeps it as it is."""
    value = pl.lit(event_times(texts))
    return TimeField(value, value.is_null(), fallback=[year_guard(time.expr)])


def _timestamp(time: Field, dtype: pl.Datetime) -> TimeField:
    """A timestamp: valid with a zone; raw holds its isoformat() text."""
    fallback = []
    years = time.facts.years
    if years is not None and not 1000 <= years[0] <= years[1] <= 9998:
        fallback.append(~time.expr.dt.year().is_between(1000, 9998))
    parts = time_parts(time.expr, dtype, time.facts.low, time.facts.high)
    member = Member([key("event_time"), '"', *parts, '"'], time.facts.nulls)
    if dtype.time_zone is None:
        return TimeField(member=member, fallback=fallback)
    value = time.expr.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    return TimeField(value, pl.lit(False), member, fallback=fallback)
