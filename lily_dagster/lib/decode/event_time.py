"""event_time values: RFC 3339 text read as the reference reads it (and refused where it
refuses it), and timestamps written as the snapshot reader writes them (isoformat)."""

from __future__ import annotations

import functools

import polars as pl

from lily_dagster.lib.decode.json_text import Part
from lily_dagster.lib.decode.schema import EVENT_TIME

_DAY_US = 86_400_000_000


def _number(text: pl.Expr, start: int, length: int) -> pl.Expr:
    return text.str.slice(start, length).cast(pl.Int32, strict=False)


def _offset_minutes(text: pl.Expr) -> pl.Expr:
    """The zone's offset in minutes (`Z` is 0)."""
    utc = text.str.ends_with("Z") | text.str.ends_with("z")
    sign = pl.when(text.str.slice(-6, 1) == "-").then(-1).otherwise(1)
    return pl.when(utc).then(0).otherwise(sign * (_number(text, -5, 2) * 60 + _number(text, -2, 2)))


def _days_in_month(year: pl.Expr, month: pl.Expr) -> pl.Expr:
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    return (
        pl.when(month == 2)
        .then(28 + leap.cast(pl.Int32))
        .when(month.is_in([4, 6, 9, 11]))
        .then(30)
        .otherwise(31)
    )


def parse_event_time(text: pl.Expr) -> pl.Expr:
    """RFC 3339 text with a zone → Datetime(us, UTC), null where the reference refuses it:
    its regex, then datetime.fromisoformat's ranges (day of month, hour ≤ 23, second ≤ 59,
    offset under 24 h), fractions cut to microseconds."""
    year, month, day = _number(text, 0, 4), _number(text, 5, 2), _number(text, 8, 2)
    hour, minute, second = _number(text, 11, 2), _number(text, 14, 2), _number(text, 17, 2)
    offset = _offset_minutes(text)
    fraction = text.str.extract(r"^.{19}\.([0-9]+)", 1)
    micros = (fraction + "000000").str.slice(0, 6).cast(pl.Int32, strict=False).fill_null(0)
    valid = (
        text.str.contains(EVENT_TIME)
        & (year >= 1)
        & month.is_between(1, 12)
        & day.is_between(1, _days_in_month(year, month))
        & (hour <= 23)
        & (minute <= 59)
        & (second <= 59)
        & (offset.abs() < 24 * 60)
    )

    def safe(part: pl.Expr) -> pl.Expr:
        return pl.when(valid).then(part).otherwise(1)

    local = pl.datetime(
        *(safe(p) for p in (year, month, day, hour, minute, second, micros)),
        time_unit="us",
        time_zone="UTC",
    )
    return pl.when(valid).then(local - pl.duration(minutes=safe(offset)))


def year_guard(text: pl.Expr) -> pl.Expr:
    """Years where the reference's astimezone(UTC) may overflow: left to the reference."""
    year = text.str.slice(0, 4).cast(pl.Int32, strict=False)
    return year.is_in([1, 9999]).fill_null(False)


def event_times(text: pl.Series) -> pl.Series:
    """RFC 3339 texts → Datetime(us, UTC), null where the reference refuses them. chrono
    reads what it can; it also takes a leap second and year 0, which fromisoformat refuses,
    and refuses some texts fromisoformat takes (a space or lowercase `t`, an offset's minutes
    past 59): those few go through `parse_event_time`, the exact reading."""
    shaped = text.str.contains(EVENT_TIME).fill_null(False)
    parsed = text.str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%.f%#z", time_unit="us", time_zone="UTC", strict=False
    )
    valid = shaped & (text.str.slice(17, 2) != "60") & (text.str.slice(0, 4) != "0000")
    result = parsed.zip_with(valid.fill_null(False), pl.Series([None], dtype=parsed.dtype))
    hard = shaped & parsed.is_null()
    if hard.any():
        rows = hard.arg_true()
        exact = pl.select(parse_event_time(pl.lit(text.gather(rows)))).to_series()
        result = result.scatter(rows, exact)
    return result.alias(text.name)


def datetime_text(expr: pl.Expr, dtype: pl.Datetime) -> pl.Expr:
    """`datetime.isoformat()` of a Parquet timestamp, `Z` for a zero offset (inventory)."""
    if dtype.time_zone is None:
        return expr.dt.to_string("%Y-%m-%dT%H:%M:%S%.6f").str.strip_suffix(".000000")
    if dtype.time_zone == "UTC":
        text = expr.dt.to_string("%Y-%m-%dT%H:%M:%S%.6f").str.strip_suffix(".000000")
        return pl.concat_str([text, pl.lit("Z")])
    text = expr.dt.to_string("%Y-%m-%dT%H:%M:%S%.6f%:z").str.replace(r"\.000000([+-])", "$1")
    return text.str.replace(r"[+-]00:00$", "Z")


@functools.cache
def _clock_texts() -> tuple[pl.Series, pl.Series]:
    """`HH:MM:SS` of every second of a day, and `.ffffff` of every microsecond (`""` for 0)."""
    seconds = pl.Series(
        [f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)]
    )
    fractions = pl.select(
        pl.concat_str([pl.lit("."), pl.int_range(1_000_000).cast(pl.String).str.zfill(6)])
    ).to_series()
    return seconds, fractions.scatter(0, "")


def time_parts(expr: pl.Expr, dtype: pl.Datetime, low: int | None, high: int | None) -> list[Part]:
    """isoformat() text of a UTC or zone-less timestamp column as parts: the date from a
    table of the column's days (`low`…`high`, in microseconds), the time of day and the
    fraction from fixed tables."""
    if dtype.time_zone not in (None, "UTC") or low is None or high is None:
        return [datetime_text(expr, dtype)]
    first, last = low // _DAY_US, high // _DAY_US
    if last - first > 100_000:
        return [datetime_text(expr, dtype)]
    days = pl.select(
        pl.int_range(first, last + 1).cast(pl.Date).dt.to_string("%Y-%m-%d")
    ).to_series()
    seconds, fractions = _clock_texts()
    us = expr.dt.epoch("us")
    day = us // _DAY_US
    rest = us - day * _DAY_US
    return [
        pl.lit(days).gather(day - first),
        "T",
        pl.lit(seconds).gather(rest // 1_000_000),
        pl.lit(fractions).gather(rest % 1_000_000),
        *(["Z"] if dtype.time_zone == "UTC" else []),
    ]
