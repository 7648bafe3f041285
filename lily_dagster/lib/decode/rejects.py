"""Decoded rows judged into events and rejects: too large first (the reference measures
before parsing), then the first failing check, worded as pydantic words it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

import polars as pl

from lily_dagster.lib.decode.checks import Check
from lily_dagster.lib.decode.partial import Partial, no_rejects, no_rows
from lily_dagster.lib.decode.schema import EVENT_TIME, NOT_TIME, NULL_BYTES, ROW, TIME_TEXT
from lily_dagster.lib.envelope import EVENT_SCHEMA
from lily_dagster.lib.reasons import Reason


def time_detail(text: str | None) -> str | None:
    """pydantic's detail for an event_time: the regex's words, or fromisoformat's."""
    if text is None or not text.startswith(TIME_TEXT):
        return text
    value = text.removeprefix(TIME_TEXT)
    if re.fullmatch(EVENT_TIME.strip("^$"), value):
        try:
            datetime.fromisoformat(value.upper())
        except ValueError as exc:
            return f"event_time: Value error, {exc}"
    return f"event_time: {NOT_TIME}"


def judge(work: pl.DataFrame, checks: Sequence[Check], max_event_bytes: int) -> Partial:
    """Split decoded rows (EVENT_SCHEMA + __row + __check [+ __detail]) into events and
    rejects: too large first (the reference measures before parsing), then the first failing
    check."""
    # A lazy raw (null) is within the limit: its bound was checked.
    oversized = (work.get_column("raw").str.len_bytes() > max_event_bytes).fill_null(False)
    failing = work.get_column("__check").is_not_null() | oversized
    if not failing.any():  # the common case: no copy
        return Partial(work.select(*EVENT_SCHEMA, ROW), no_rejects(), no_rows())
    rejects = _rejects(work.filter(failing), checks, max_event_bytes)
    events = work.filter(~failing).select(*EVENT_SCHEMA, ROW)
    return Partial(events, rejects, no_rows())


def _rejects(bad: pl.DataFrame, checks: Sequence[Check], max_event_bytes: int) -> pl.DataFrame:
    """The failing rows as rejects (event_id, reason, detail, raw, raw_bytes, origin, __row)."""
    size = pl.col("raw").str.len_bytes()
    index = list(range(len(checks)))
    reason = pl.col("__check").replace_strict(
        index, [c.reason.value for c in checks], default=None, return_dtype=pl.String
    )
    static = [c.detail if isinstance(c.detail, str) else "" for c in checks]
    detail = (
        pl.col("__detail")
        if "__detail" in bad.columns
        else pl.col("__check").replace_strict(index, static, default=None, return_dtype=pl.String)
    )
    rejects = bad.select(
        "event_id",
        pl.when(size > max_event_bytes)
        .then(pl.lit(Reason.OVERSIZED.value))
        .otherwise(reason)
        .alias("reason"),
        pl.when(size > max_event_bytes)
        .then(pl.format(f"{{}} bytes exceeds the limit of {max_event_bytes}", size))
        .otherwise(detail)
        .alias("detail"),
        "raw",
        NULL_BYTES.alias("raw_bytes"),  # JSON text built here is UTF-8
        "origin",
        ROW,
    )
    details = rejects.get_column("detail")
    if details.str.starts_with(TIME_TEXT).any():
        words = [time_detail(d) for d in details.to_list()]
        rejects = rejects.with_columns(pl.Series("detail", words, dtype=pl.String))
    return rejects
