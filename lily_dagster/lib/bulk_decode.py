"""Bulk envelope decoding in polars: the backfill gate, column-wise instead of row by row.

`decode_frame` turns a frame of envelopes into the same events (EVENT_SCHEMA) and rejects
(REJECT_SCHEMA) as `decode_envelopes` followed by the two tenant rules of `validation`
(`tenant_format`, `tenant_binding`), without a Python object per row. Three layouts:

- nested: `event_id, tenant, source, op, event_time` and an `asset` struct
  (`type_name, qualified_name, name, attributes, classifications, inputs, outputs`), the
  attributes a struct or a JSON object string;
- flattened: the same with `asset_type_name`, `asset_qualified_name`, … columns;
- payloads: a `value` column of envelope JSON text (String or Binary, one envelope a row:
  JSON Lines, landed Kafka messages), optionally with its own `origin` column.

`raw`. Parquet has no "payload as received", so a Parquet row's `raw` is the compact JSON
of its envelope exactly as the row-by-row snapshot reader writes it
(`json.dumps(inventory.parquet_envelope(row), separators=(",", ":"))`: a null is an absent
key, non-ASCII is `\\u`-escaped, the asset last): both readers quarantine a row under the same
`quarantine_id`, and replaying `raw` through `decode_envelopes` gives the same event. For
JSON text, `raw` is the text itself, byte for byte.

Parquet (the bulk format) is decoded in polars: a first pass over each column finds what it
holds (nulls, whether its bytes need JSON escapes or are ASCII, constant strings, empty
lists, float ranges), then one query builds the events, the reason of each reject and the
JSON text: clean columns are concatenated as they are, mostly-null members are built for
their rows only, timestamps come from lookup tables. Checks follow the reference's
precedence (the first failing field in declaration order names the reason, with pydantic's
detail): a column of the wrong type rejects its non-null rows by dtype. Large frames are
cut into slices decoded on every polars thread. JSON text (JSON Lines, and attributes given
as JSON strings) is typed row by row by DuckDB's JSON functions, which polars lacks (its
reader stops at the first bad row and turns numbers into strings); rows proven valid and
plain are decoded column-wise.

Whatever the column-wise path cannot decide exactly goes to the reference itself, so the
result is the same row for row: invalid JSON text, patches (`lily_patch`), floats Python
prints in exponent form, JSON with escapes or nested objects in free-form attributes,
duplicate keys, values of exotic Parquet types (decimal, binary, dates outside
`event_time`). These are rare in bulk loads; a file made of them decodes at the reference's
speed.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

import polars as pl

from lily_dagster.lib.envelope import (
    EVENT_SCHEMA,
    WELL_KNOWN_ATTRIBUTES,
    DecodeResult,
    decode_envelopes,
    empty_events,
    empty_rejects,
    quarantine_id,
    to_rejects,
)
from lily_dagster.lib.inventory import (
    InventoryError,
    SnapshotFile,
    _check_columns,
    _json_value,
    _parquet_error,
    _s3_client,
    _s3_error,
    _split_s3,
    list_snapshot,
    parquet_envelope,
)
from lily_dagster.lib.reasons import Reason
from lily_dagster.lib.validation import envelope_rules

if TYPE_CHECKING:
    from polars._typing import PolarsDataType as DType
else:
    DType = Any

__all__ = ["DecodeResult", "decode_frame", "fill_raw", "scan_envelopes"]

ENVELOPE_FIELDS = ("event_id", "tenant", "source", "op", "event_time")
STRING_ASSET_FIELDS = ("type_name", "qualified_name", "name")
LIST_ASSET_FIELDS = ("classifications", "inputs", "outputs")
DECLARED_ATTRIBUTES = (*WELL_KNOWN_ATTRIBUTES, "lily_patch")
LIST_ATTRIBUTES = tuple(a for a in WELL_KNOWN_ATTRIBUTES if EVENT_SCHEMA[a] == pl.List(pl.String))
TENANT_RULES = ("tenant_format", "tenant_binding")
OPS = ("upsert", "delete")
PARALLEL_MIN_ROWS = 50_000  # slices smaller than this are not worth a thread

_ROW = "__row"
_TRUE = pl.lit(True)
_NULL_STR = pl.lit(None, dtype=pl.String)
_NULL_BYTES = pl.lit(None, dtype=pl.Binary)
_INTS = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)
_NON_ASCII = re.compile("[^\x00-\x7e]")
_EVENT_TIME = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_ORIGIN_NUMBER = re.compile(r"(.*#)([0-9]+)")
_TIME_TEXT = "\x00event_time\x00"  # a detail still to be worded (see _time_detail)

MISSING = "Field required"
NOT_STRING = "Input should be a valid string"
NOT_ARRAY = "Input should be a valid array"
NOT_OBJECT = "Input should be an object"
NOT_OP = "Input should be 'upsert' or 'delete'"
NOT_TIME = "Value error, expected RFC 3339 date-time with a time zone, e.g. 2026-11-23T10:00:00Z"


# --- what a column holds: found once per frame, so each column gets the cheapest exact path --


@dataclass(frozen=True)
class _Facts:
    nulls: bool = True  # some value is null
    escape: bool = True  # strings (or list items): a quote, backslash or control character
    control: bool = True  # strings (or list items): a control character
    ascii: bool = False  # strings (or list items): every byte below 0x7f
    item_nulls: bool = True  # lists: some item is null
    constant: str | None = None  # strings without nulls: the one value, when there is one
    empty: bool = True  # lists: some list is empty
    all_null: bool = False  # every value is null
    unsafe_floats: bool = True  # floats: some value Python prints otherwise than polars
    low: int | None = None  # timestamps: the earliest, in microseconds since the epoch
    high: int | None = None  # … the latest
    years: tuple[int, int] | None = None  # … and their years


_UNKNOWN = _Facts()


@dataclass(frozen=True)
class _Leaf:
    expr: pl.Expr
    series: pl.Series
    constant: bool = False  # look for a value shared by every row

    @property
    def dtype(self) -> DType:
        return self.series.dtype


def _has_text(dtype: DType) -> bool:
    if dtype == pl.String:
        return True
    if isinstance(dtype, pl.List):
        return _has_text(dtype.inner)
    if isinstance(dtype, pl.Struct):
        return any(_has_text(f.dtype) for f in dtype.fields)
    return False


def _text_bytes(text: pl.Series) -> tuple[bool, bool, bool]:
    """(escape, control, ascii) of a string column: its bytes seen as one UInt8 column."""
    if text.null_count():
        text = text.drop_nulls()  # explode has a slow path for nulls
    data = text.cast(pl.Binary).cast(pl.List(pl.UInt8)).explode()
    if not data.len() or data.null_count() == data.len():
        return False, False, True
    low, high = cast(int, data.min()), cast(int, data.max())
    control = low < 0x20
    escape = control or bool(((data == 0x22) | (data == 0x5C)).any())
    return escape, control, high < 0x7F


def _leaf_facts(leaf: _Leaf) -> _Facts:
    """What a native leaf holds: nulls, the bytes of its text (or list items), empty lists,
    null items, a constant string, unsafe floats, the range of timestamps."""
    series, dtype = leaf.series, leaf.dtype
    nulls = series.null_count()
    if nulls == series.len():
        return _Facts(nulls > 0, False, False, True, False, None, False, True, False)
    facts = _Facts(nulls=nulls > 0, ascii=not _has_text(dtype))
    if dtype == pl.String:
        if leaf.constant and not nulls and series[0] == series[-1] and series.min() == series.max():
            # one value: written as a literal by json.dumps, its bytes need no look
            return replace(facts, escape=False, control=False, ascii=True, item_nulls=False,
                           constant=cast(str, series[0]), empty=False)  # fmt: skip
        escape, control, ascii_only = _text_bytes(series)
        value = None
        return replace(
            facts, escape=escape, control=control, ascii=ascii_only, item_nulls=False,
            constant=value, empty=False,
        )  # fmt: skip
    if isinstance(dtype, pl.List) and dtype.inner == pl.String:
        items = series.explode(keep_nulls=False)
        escape, control, ascii_only = _text_bytes(items)
        return replace(
            facts, escape=escape, control=control, ascii=ascii_only,
            item_nulls=items.null_count() > 0, empty=series.list.len().min() == 0,
        )  # fmt: skip
    if dtype == pl.Float64:
        unsafe = pl.select(_float_guard(pl.lit(series)).any()).item()
        return replace(facts, unsafe_floats=bool(unsafe))
    if isinstance(dtype, pl.Datetime):
        micros = series.dt.epoch("us")
        low, high = cast(int, micros.min()), cast(int, micros.max())
        epoch = datetime(1970, 1, 1)
        years = (
            (epoch + timedelta(microseconds=low)).year,
            (epoch + timedelta(microseconds=high)).year,
        )
        return replace(facts, low=low, high=high, years=years)
    return facts


# --- JSON text, as Python's json.dumps writes it -------------------------------------------

# Text is built as parts (literal strings and expressions) that one concat_str joins: polars
# pays per input of a concatenation, so literals are merged and values quoted in place.
_Part = str | pl.Expr


def _concat(parts: Sequence[_Part]) -> pl.Expr:
    """One expression of the parts, null when any expression part is null."""
    merged: list[_Part] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    exprs = [pl.lit(p) if isinstance(p, str) else p for p in merged]
    return exprs[0] if len(exprs) == 1 else pl.format("{}" * len(exprs), *exprs)


def _key(name: str) -> str:
    """A member name and its colon, escaped as json.dumps escapes it."""
    return json.dumps(name) + ":"


def _value(expr: pl.Expr) -> pl.Expr:
    """One value as JSON text through json_encode; null stays null (an absent member)."""
    encoded = pl.struct(expr.alias("v")).struct.json_encode()
    return pl.when(expr.is_not_null()).then(encoded.str.slice(5).str.head(-1))


def _text(expr: pl.Expr, dtype: DType, facts: _Facts) -> list[_Part]:
    """A native value as JSON text parts (null where the value is null)."""
    if dtype == pl.String:
        if facts.control:
            return [_value(expr)]
        if facts.escape:
            expr = expr.str.replace_many(["\\", '"'], ["\\\\", '\\"'])
        return ['"', expr, '"']
    if dtype == pl.Boolean or isinstance(dtype, _INTS):
        return [expr.cast(pl.String)]
    if isinstance(dtype, pl.List) and dtype.inner == pl.String:
        if facts.escape or facts.item_nulls:
            return [_value(expr)]
        if not facts.empty:
            return ['["', expr.list.join('","'), '"]']
        items = pl.concat_str([pl.lit('["'), expr.list.join('","'), pl.lit('"]')])
        return [pl.when(expr.list.len() == 0).then(pl.lit("[]")).otherwise(items)]
    return [_value(expr)]


@dataclass(frozen=True)
class _Member:
    parts: list[_Part]  # `"key":value`
    nullable: bool  # absent in the rows where it is null


SPARSE_SHARE = 0.3  # a member present in at most this share of rows is built for those only
SPARSE_MIN_ROWS = 10_000


def _member(name: str, field: _Field) -> _Member:
    """`"name":value` of a native field, absent where it is null. A mostly-null field's text
    is built for its present rows only and put back in place: polars pays per row, null or
    not, for list joins and concatenations."""
    facts, series = field.facts, field.series
    if facts.all_null:
        return _Member([], True)
    parts = [_key(name), *_text(field.expr, field.dtype, facts)]
    if not facts.nulls or series is None or series.len() < SPARSE_MIN_ROWS:
        return _Member(parts, facts.nulls)
    present = series.len() - series.null_count()
    if present > SPARSE_SHARE * series.len():
        return _Member(parts, True)
    rows = series.is_not_null().arg_true()
    values = series.gather(rows).alias("__v")
    text = _concat([_key(name), *_text(pl.col("__v"), field.dtype, facts)])
    built = values.to_frame().select(text).to_series()
    full = pl.repeat(None, series.len(), dtype=pl.String, eager=True).scatter(rows, built)
    return _Member([pl.lit(full)], True)


def _object(members: Sequence[_Member]) -> list[_Part]:
    """`{…}` of the members, the null ones left out: members that are never null are joined
    in place; with some that may be, the segments are joined skipping nulls."""
    members = [m for m in members if m.parts]  # never present
    if not members:
        return ["{}"]
    if not any(m.nullable for m in members):
        parts: list[_Part] = ["{"]
        for i, m in enumerate(members):
            parts += ([","] if i else []) + m.parts
        return [*parts, "}"]
    segments: list[pl.Expr] = []
    run: list[_Part] = []
    for m in members:
        if m.nullable:
            if run:
                segments.append(_concat(run))
                run = []
            segments.append(_concat(m.parts))
        else:
            run += ([","] if run else []) + m.parts
    if run:
        segments.append(_concat(run))
    inner = pl.concat_str(segments, separator=",", ignore_nulls=True)
    return ["{", inner, "}"]


def _flat(dtype: DType) -> bool:
    """No object inside."""
    if isinstance(dtype, pl.Struct):
        return False
    if isinstance(dtype, pl.List):
        return _flat(dtype.inner)
    return True


def _sorted_keys(expr: pl.Expr, dtype: DType) -> pl.Expr:
    """The value with every object's keys in sorted order (json.dumps(sort_keys=True))."""
    if isinstance(dtype, pl.Struct):
        fields = sorted(dtype.fields, key=lambda f: f.name)
        rebuilt = pl.struct(
            [_sorted_keys(expr.struct.field(f.name), f.dtype).alias(f.name) for f in fields]
        )
        return pl.when(expr.is_not_null()).then(rebuilt)
    if isinstance(dtype, pl.List) and not _flat(dtype.inner):
        return expr.list.eval(_sorted_keys(pl.element(), dtype.inner))
    return expr


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 | (code >> 10):04x}\\u{0xDC00 | (code & 0x3FF):04x}"


def _ascii(texts: pl.Series, needs: pl.Series | None = None) -> pl.Series:
    """JSON text with every non-ASCII character (and DEL) escaped, as ensure_ascii does.
    Only the rows that need it (`needs`, or those found here) reach Python, joined into one
    string (JSON text has no raw newline) for one regex pass."""
    if needs is None:
        needs = texts.str.contains(r"[^\x00-\x7e]")
    needs = needs.fill_null(False)
    if not needs.any():
        return texts
    index = needs.arg_true()
    escaped = _NON_ASCII.sub(_escape_char, "\n".join(texts.gather(index).to_list())).split("\n")
    return texts.scatter(index, escaped)


# --- dtypes ----------------------------------------------------------------------------------


def _normal(dtype: DType) -> DType:
    """Categorical/Enum read as strings, Float32 as the Float64 Python sees, arrays as lists."""
    if isinstance(dtype, (pl.Categorical, pl.Enum)):
        return pl.String()
    if dtype == pl.Float32:
        return pl.Float64()
    if isinstance(dtype, (pl.Array, pl.List)):
        return pl.List(_normal(dtype.inner))
    if isinstance(dtype, pl.Struct):
        return pl.Struct([pl.Field(f.name, _normal(f.dtype)) for f in dtype.fields])
    return dtype


def _native(dtype: DType, top: bool = True) -> bool:
    """Values this module writes exactly as Python's json.dumps would: strings, integers,
    booleans, lists and structs of them, and (not nested) floats, checked row by row."""
    if dtype in (pl.String, pl.Boolean, pl.Null) or isinstance(dtype, _INTS):
        return True
    if dtype == pl.Float64:
        return top
    if isinstance(dtype, pl.List):
        return _native(dtype.inner, top=False)
    if isinstance(dtype, pl.Struct):
        return all(_native(f.dtype, top=False) for f in dtype.fields)
    return False


# --- event_time ------------------------------------------------------------------------------


def _parse_event_time(text: pl.Expr) -> pl.Expr:
    """RFC 3339 text with a zone → Datetime(us, UTC), null where the reference refuses it:
    its regex, then datetime.fromisoformat's ranges (day of month, hour ≤ 23, second ≤ 59,
    offset under 24 h), fractions cut to microseconds."""
    ok = text.str.contains(_EVENT_TIME)
    year = text.str.slice(0, 4).cast(pl.Int32, strict=False)
    month = text.str.slice(5, 2).cast(pl.Int32, strict=False)
    day = text.str.slice(8, 2).cast(pl.Int32, strict=False)
    hour = text.str.slice(11, 2).cast(pl.Int32, strict=False)
    minute = text.str.slice(14, 2).cast(pl.Int32, strict=False)
    second = text.str.slice(17, 2).cast(pl.Int32, strict=False)
    utc = text.str.ends_with("Z") | text.str.ends_with("z")
    sign = pl.when(text.str.slice(-6, 1) == "-").then(-1).otherwise(1)
    offset = (
        pl.when(utc)
        .then(0)
        .otherwise(
            sign
            * (
                text.str.slice(-5, 2).cast(pl.Int32, strict=False) * 60
                + text.str.slice(-2, 2).cast(pl.Int32, strict=False)
            )
        )
    )
    fraction = text.str.extract(r"^.{19}\.([0-9]+)", 1)
    micros = (fraction + "000000").str.slice(0, 6).cast(pl.Int32, strict=False).fill_null(0)
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    days = (
        pl.when(month == 2)
        .then(28 + leap.cast(pl.Int32))
        .when(month.is_in([4, 6, 9, 11]))
        .then(30)
        .otherwise(31)
    )
    valid = (
        ok
        & (year >= 1)
        & month.is_between(1, 12)
        & day.is_between(1, days)
        & (hour <= 23)
        & (minute <= 59)
        & (second <= 59)
        & (offset.abs() < 24 * 60)
    )

    def safe(part: pl.Expr) -> pl.Expr:
        return pl.when(valid).then(part).otherwise(1)

    local = pl.datetime(
        safe(year),
        safe(month),
        safe(day),
        safe(hour),
        safe(minute),
        safe(second),
        safe(micros),
        time_unit="us",
        time_zone="UTC",
    )
    return pl.when(valid).then(local - pl.duration(minutes=safe(offset)))


def _year_guard(text: pl.Expr) -> pl.Expr:
    """Years where the reference's astimezone(UTC) may overflow: left to the reference."""
    year = text.str.slice(0, 4).cast(pl.Int32, strict=False)
    return year.is_in([1, 9999]).fill_null(False)


def _event_times(text: pl.Series) -> pl.Series:
    """RFC 3339 texts → Datetime(us, UTC), null where the reference refuses them. chrono
    reads what it can; it also takes a leap second and year 0, which fromisoformat refuses,
    and refuses some texts fromisoformat takes (a space or lowercase `t`, an offset's minutes
    past 59): those few go through `_parse_event_time`, the exact reading."""
    shaped = text.str.contains(_EVENT_TIME).fill_null(False)
    parsed = text.str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%.f%#z", time_unit="us", time_zone="UTC", strict=False
    )
    valid = shaped & (text.str.slice(17, 2) != "60") & (text.str.slice(0, 4) != "0000")
    result = parsed.zip_with(valid.fill_null(False), pl.Series([None], dtype=parsed.dtype))
    hard = shaped & parsed.is_null()
    if hard.any():
        rows = hard.arg_true()
        exact = pl.select(_parse_event_time(pl.lit(text.gather(rows)))).to_series()
        result = result.scatter(rows, exact)
    return result.alias(text.name)


def _datetime_text(expr: pl.Expr, dtype: pl.Datetime) -> pl.Expr:
    """`datetime.isoformat()` of a Parquet timestamp, `Z` for a zero offset (inventory)."""
    if dtype.time_zone is None:
        return expr.dt.to_string("%Y-%m-%dT%H:%M:%S%.6f").str.strip_suffix(".000000")
    if dtype.time_zone == "UTC":
        text = expr.dt.to_string("%Y-%m-%dT%H:%M:%S%.6f").str.strip_suffix(".000000")
        return pl.concat_str([text, pl.lit("Z")])
    text = expr.dt.to_string("%Y-%m-%dT%H:%M:%S%.6f%:z").str.replace(r"\.000000([+-])", "$1")
    return text.str.replace(r"[+-]00:00$", "Z")


_DAY_US = 86_400_000_000


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


def _time_parts(
    expr: pl.Expr, dtype: pl.Datetime, low: int | None, high: int | None
) -> list[_Part]:
    """isoformat() text of a UTC or zone-less timestamp column as parts: the date from a
    table of the column's days (`low`…`high`, in microseconds), the time of day and the
    fraction from fixed tables."""
    if dtype.time_zone not in (None, "UTC") or low is None or high is None:
        return [_datetime_text(expr, dtype)]
    first, last = low // _DAY_US, high // _DAY_US
    if last - first > 100_000:
        return [_datetime_text(expr, dtype)]
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


# --- the structured layouts ------------------------------------------------------------------


@dataclass(frozen=True)
class _Check:
    bad: pl.Expr
    reason: Reason
    detail: str | pl.Expr  # what pydantic says (an expression where it names an item)


@dataclass
class _Partial:
    """One path's share: events and rejects with their row numbers, and the rows it leaves
    to the reference decoder."""

    events: pl.DataFrame  # EVENT_SCHEMA + __row
    rejects: pl.DataFrame  # event_id, reason, detail, raw, origin, __row
    fallback: pl.Series  # row numbers (UInt32)


@dataclass(frozen=True)
class _Field:
    expr: pl.Expr
    dtype: DType
    facts: _Facts
    native: bool
    series: pl.Series | None = None


def _fields(leaves: dict[str, _Leaf]) -> dict[str, _Field]:
    """The leaves as fields, with the facts of the native ones."""
    fields = {}
    for k, leaf in leaves.items():
        native = _native(leaf.dtype)
        timestamp = isinstance(leaf.dtype, (pl.Datetime, pl.Date))
        facts = _leaf_facts(leaf) if native or timestamp else _UNKNOWN
        fields[k] = _Field(leaf.expr, leaf.dtype, facts, native, leaf.series)
    return fields


def _string_checks(
    field: _Field | None, loc: str, wrong: Reason = Reason.WRONG_TYPE, message: str = NOT_STRING
) -> list[_Check]:
    if field is None or field.dtype == pl.Null:
        return [_Check(_TRUE, Reason.MISSING_FIELD, f"{loc}: {MISSING}")]
    checks = []
    if field.facts.nulls:
        checks.append(_Check(field.expr.is_null(), Reason.MISSING_FIELD, f"{loc}: {MISSING}"))
    if field.dtype != pl.String:
        checks.append(_Check(field.expr.is_not_null(), wrong, f"{loc}: {message}"))
    return checks


def _optional_string_checks(field: _Field | None, loc: str) -> list[_Check]:
    if field is None or field.dtype in (pl.Null, pl.String):
        return []
    return [_Check(field.expr.is_not_null(), Reason.WRONG_TYPE, f"{loc}: {NOT_STRING}")]


def _list_checks(field: _Field | None, loc: str) -> list[_Check]:
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
            return [_Check(bad, Reason.WRONG_TYPE, detail)]
        # any item of another type (a null included) is not a string
        return [_Check(expr.list.len() > 0, Reason.WRONG_TYPE, f"{loc}.0: {NOT_STRING}")]
    return [_Check(expr.is_not_null(), Reason.WRONG_TYPE, f"{loc}: {NOT_ARRAY}")]


def _as_strings(field: _Field | None) -> pl.Expr:
    """The column as the event's list of strings (rows where it is anything else are
    rejected, so only null and empty lists of other item types get here)."""
    if field is None or not isinstance(field.dtype, pl.List):
        return pl.lit(None, dtype=pl.List(pl.String))
    if field.dtype.inner == pl.String:
        return field.expr
    return field.expr.cast(pl.List(pl.String), strict=False)


def _as_string(field: _Field | None) -> pl.Expr:
    return field.expr if field is not None and field.dtype == pl.String else _NULL_STR


def _float_guard(expr: pl.Expr) -> pl.Expr:
    magnitude = expr.abs()
    plain = expr.is_finite() & ((expr == 0) | ((magnitude >= 1e-4) & (magnitude < 1e16)))
    return expr.is_not_null() & ~plain


def _first_failing(checks: Sequence[_Check]) -> pl.Expr:
    """Index of the first failing check, null when none fails."""
    if not checks:
        return pl.lit(None, dtype=pl.Int32)
    chain: Any = pl.when(checks[0].bad.fill_null(False)).then(pl.lit(0, dtype=pl.Int32))
    for i, check in enumerate(checks[1:], start=1):
        chain = chain.when(check.bad.fill_null(False)).then(pl.lit(i, dtype=pl.Int32))
    return cast(pl.Expr, chain.otherwise(pl.lit(None, dtype=pl.Int32)))


def _ascii_rows(field: _Field) -> pl.Expr | None:
    """Rows where a string (or list of strings) column holds non-ASCII; None: unknown."""
    if field.facts.ascii:
        return pl.lit(False)
    if field.dtype == pl.String:
        return field.expr.str.contains(r"[^\x00-\x7e]")
    if isinstance(field.dtype, pl.List) and field.dtype.inner == pl.String:
        return field.expr.list.join("").str.contains(r"[^\x00-\x7e]")
    return None


def _raw_bound(fields: dict[str, _Field]) -> pl.Expr | None:
    """An upper bound of each row's raw length in bytes, from its leaves (None: a value of a
    type not bounded here). Escaping writes at most 6 bytes a byte (`\\u00XX`); any other
    value, key and separator fits in 64."""
    parts: list[pl.Expr] = [pl.lit(256, dtype=pl.Int64)]
    for name, field in fields.items():
        if name == "asset.attributes" and isinstance(field.dtype, pl.Struct):
            continue  # its fields are leaves of their own (attr.*)
        part = _value_bound(field.expr, field.dtype)
        if part is None:
            return None
        parts.append(part)
    return pl.sum_horizontal(parts)


def _value_bound(expr: pl.Expr, dtype: DType) -> pl.Expr | None:
    """`_raw_bound` of one value (and what it holds)."""
    if dtype == pl.Null or dtype.is_numeric() or dtype == pl.Boolean or dtype.is_temporal():
        return pl.lit(64, dtype=pl.Int64)
    if dtype == pl.String:
        return expr.str.len_bytes().cast(pl.Int64).fill_null(0) * 6 + 64
    if isinstance(dtype, pl.Struct):
        parts = [_value_bound(expr.struct.field(f.name), f.dtype) for f in dtype.fields]
        if any(p is None for p in parts):
            return None
        return pl.sum_horizontal([pl.lit(64, dtype=pl.Int64), *parts])
    if isinstance(dtype, pl.List) and dtype.inner == pl.String:
        items = expr.list.eval(pl.element().str.len_bytes().cast(pl.Int64) * 6 + 8)
        return items.list.sum().fill_null(0) + 64
    if isinstance(dtype, pl.List) and (
        dtype.inner.is_numeric() or dtype.inner in (pl.Boolean, pl.Null)
    ):
        return expr.list.len().cast(pl.Int64).fill_null(0) * 64 + 64
    return None


def _structured_parallel(
    frame: pl.DataFrame, origins: pl.Series, max_event_bytes: int, lazy_raw: bool = False
) -> tuple[_Partial, pl.DataFrame]:
    """`_structured` on slices of a large frame at once, one a polars thread (polars runs
    without the GIL): the text building is what costs, and it is per row."""
    workers = pl.thread_pool_size()
    if workers < 2 or frame.height < 2 * PARALLEL_MIN_ROWS:
        return _structured(frame, origins, max_event_bytes, lazy_raw=lazy_raw)
    size = -(-frame.height // workers)
    starts = range(0, frame.height, size)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bulk-decode") as pool:
        done = list(
            pool.map(
                lambda start: _structured(
                    frame.slice(start, size),
                    origins.slice(start, size),
                    max_event_bytes,
                    start,
                    lazy_raw,
                ),
                starts,
            )
        )
    partial = _concat_partials([p for p, _ in done])
    partial.fallback = pl.concat([p.fallback for p, _ in done])
    return partial, pl.concat([left for _, left in done])


def _structured(
    original: pl.DataFrame,
    origins: pl.Series,
    max_event_bytes: int,
    offset: int = 0,
    lazy_raw: bool = False,
) -> tuple[_Partial, pl.DataFrame]:
    """Decode a nested or flattened frame (rows numbered from `offset`); returns the partial
    result and the original rows left to the reference (with their row numbers). With
    `lazy_raw`, `raw` is left null (see decode_frame)."""
    normal = {c: _normal(d) for c, d in original.schema.items()}
    frame = original if normal == dict(original.schema) else original.cast(normal)  # type: ignore[arg-type]
    schema = frame.schema
    nested = "asset" in schema
    top = [c for c in frame.columns if c != "asset" and not c.startswith("asset_")]
    fallback: list[pl.Expr] = []

    # Every leaf the envelope may use, with what it holds (one pass over the frame).
    leaves: dict[str, _Leaf] = {}
    for c in top:
        leaves[f"top.{c}"] = _Leaf(pl.col(c), frame.get_column(c), constant=True)
    asset_dtype = schema["asset"] if nested else None
    asset_ok = not nested or isinstance(asset_dtype, pl.Struct)  # fields can be read
    asset_names: list[str] = []
    if nested and isinstance(asset_dtype, pl.Struct):
        asset = frame.get_column("asset")
        for f in asset_dtype.fields:
            asset_names.append(f.name)
            leaves[f"asset.{f.name}"] = _Leaf(
                pl.col("asset").struct.field(f.name), asset.struct.field(f.name)
            )
    elif not nested:
        for c in frame.columns:
            if c.startswith("asset_"):
                name = c.removeprefix("asset_")
                asset_names.append(name)
                leaves[f"asset.{name}"] = _Leaf(pl.col(c), frame.get_column(c))
    attr_leaf = leaves.get("asset.attributes")
    if attr_leaf is not None and isinstance(attr_leaf.dtype, pl.Struct):
        for f in attr_leaf.dtype.fields:
            leaves[f"attr.{f.name}"] = _Leaf(
                attr_leaf.expr.struct.field(f.name), attr_leaf.series.struct.field(f.name)
            )
    fields = _fields(leaves)
    top_fields = {c: fields[f"top.{c}"] for c in top}
    asset_fields = {n: fields[f"asset.{n}"] for n in asset_names}
    asset_nulls = nested and frame.get_column("asset").null_count() > 0
    if nested and not asset_ok and asset_dtype != pl.Null:
        fallback.append(pl.col("asset").is_not_null())  # not an object: the reference says why

    def unsafe(field: _Field) -> None:
        """Rows with values this path does not write go to the reference."""
        if not field.native:
            fallback.append(field.expr.is_not_null())
        elif field.dtype == pl.Float64 and field.facts.unsafe_floats:
            fallback.append(_float_guard(field.expr))

    for c, field in top_fields.items():
        if not (c == "event_time" and isinstance(field.dtype, (pl.Datetime, pl.Date))):
            unsafe(field)
    for name, field in asset_fields.items():
        if name != "attributes":
            unsafe(field)

    # attributes: a struct (the common case), JSON text (read by the reference), or
    # something else (wrong_type).
    attr = asset_fields.get("attributes")
    attr_checks: list[_Check] = []
    attr_fields: dict[str, _Field] = {}
    attr_member: _Member | None = None  # the attributes object in raw
    json_ascii: pl.Expr | None = None  # rows whose JSON text attributes hold non-ASCII
    extras_text: pl.Expr = pl.lit("{}")
    if attr is not None and isinstance(attr.dtype, pl.Struct):
        for f in attr.dtype.fields:
            attr_fields[f.name] = fields[f"attr.{f.name}"]
            unsafe(attr_fields[f.name])
        if "lily_patch" in attr_fields and attr_fields["lily_patch"].dtype != pl.Null:
            fallback.append(attr_fields["lily_patch"].expr.is_not_null())
        for name in WELL_KNOWN_ATTRIBUTES:
            loc = f"asset.attributes.{name}"
            if name in LIST_ATTRIBUTES:
                attr_checks += _list_checks(attr_fields.get(name), loc)
            else:
                attr_checks += _optional_string_checks(attr_fields.get(name), loc)
        natives = {n: f for n, f in attr_fields.items() if f.native}
        members = {n: _member(n, f) for n, f in natives.items()}
        raw_attributes = _object(list(members.values()))
        extras = []
        for n in sorted(natives):
            if n in DECLARED_ATTRIBUTES:
                continue
            extra = natives[n]
            if _flat(extra.dtype):
                extras.append(members[n])
            else:
                nested_value = _value(_sorted_keys(extra.expr, extra.dtype))
                extras.append(_Member([_key(n), nested_value], extra.facts.nulls))
        extras_text = _concat(_object(extras))
        if attr.facts.nulls:
            present = attr.expr.is_not_null()
            attr_member = _Member(
                [_key("attributes"), pl.when(present).then(_concat(raw_attributes))], True
            )
            extras_text = pl.when(present).then(extras_text).otherwise(pl.lit("{}"))
        else:
            attr_member = _Member([_key("attributes"), *raw_attributes], False)
    elif attr is not None and attr.dtype != pl.Null:
        if attr.native and attr.dtype != pl.String:
            unsafe(attr)  # a float written in raw must print as Python prints it
            attr_checks.append(
                _Check(
                    attr.expr.is_not_null(), Reason.WRONG_TYPE, f"asset.attributes: {NOT_OBJECT}"
                )
            )
            attr_member = _member("attributes", attr)
        elif attr.dtype == pl.String and attr.series is not None:  # JSON object text
            read = _json_attributes(attr.series)
            fast = pl.lit(read.get_column("fast"))
            fallback.append(attr.expr.is_not_null() & ~fast.fill_null(False))
            for n in WELL_KNOWN_ATTRIBUTES:
                column = read.get_column(n)
                attr_fields[n] = _Field(pl.lit(column), column.dtype, _UNKNOWN, True, column)
            obj = read.get_column("object")
            attr_member = _Member([_key("attributes"), pl.lit(obj)], True)
            extras_text = pl.lit(read.get_column("extras")).fill_null(pl.lit("{}"))
            json_ascii = pl.lit(obj.str.contains(r"[^\x00-\x7e]").fill_null(False))
        else:  # a map: the reference reads it
            fallback.append(attr.expr.is_not_null())

    # event_time: text, a timestamp (with a zone it is valid) or anything else (invalid).
    time = top_fields.get("event_time")
    time_checks: list[_Check] = []
    event_time: pl.Expr = pl.lit(None, dtype=pl.Datetime("us", "UTC"))
    time_member: _Member | None = None
    missing_time = _Check(_TRUE, Reason.MISSING_FIELD, f"event_time: {MISSING}")
    if time is None or time.dtype == pl.Null:
        time_checks.append(missing_time)
    else:
        if time.facts.nulls:
            time_checks.append(
                _Check(time.expr.is_null(), missing_time.reason, missing_time.detail)
            )
        bad: pl.Expr = _TRUE
        if time.dtype == pl.String and time.series is not None:
            event_time = pl.lit(_event_times(time.series))
            fallback.append(_year_guard(time.expr))
            bad = event_time.is_null()
        elif isinstance(time.dtype, pl.Datetime):
            years = time.facts.years
            if years is not None and not 1000 <= years[0] <= years[1] <= 9998:
                fallback.append(~time.expr.dt.year().is_between(1000, 9998))
            parts = _time_parts(time.expr, time.dtype, time.facts.low, time.facts.high)
            time_member = _Member([_key("event_time"), '"', *parts, '"'], time.facts.nulls)
            if time.dtype.time_zone is not None:
                event_time = time.expr.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
                bad = pl.lit(False)
        elif time.dtype == pl.Date:
            time_member = _Member(
                [_key("event_time"), '"', time.expr.dt.to_string("%Y-%m-%d"), '"'], time.facts.nulls
            )
        if not (isinstance(bad, pl.Expr) and bad.meta.eq(pl.lit(False))):
            detail: str | pl.Expr = f"event_time: {NOT_TIME}"
            if time.dtype == pl.String:  # its text, for the words of fromisoformat
                detail = pl.concat_str([pl.lit(_TIME_TEXT), time.expr])
            time_checks.append(_Check(bad, Reason.BAD_EVENT_TIME, detail))

    # The checks, in the order pydantic reports them.
    checks: list[_Check] = []
    for name in ("event_id", "tenant", "source"):
        checks += _string_checks(top_fields.get(name), name)
    op = top_fields.get("op")
    checks += _string_checks(op, "op", wrong=Reason.UNKNOWN_OP, message=NOT_OP)
    if op is not None and op.dtype == pl.String and op.facts.constant not in OPS:
        checks.append(_Check(~op.expr.is_in(OPS), Reason.UNKNOWN_OP, f"op: {NOT_OP}"))
    checks += time_checks
    if nested and (asset_nulls or not asset_ok):
        checks.append(_Check(pl.col("asset").is_null(), Reason.MISSING_FIELD, f"asset: {MISSING}"))
    if asset_ok:
        for name in STRING_ASSET_FIELDS:
            checks += _string_checks(asset_fields.get(name), f"asset.{name}")
        checks += attr_checks
        for name in LIST_ASSET_FIELDS:
            checks += _list_checks(asset_fields.get(name), f"asset.{name}")

    # raw: the envelope's columns in order, the asset object last (inventory.parquet_envelope).
    top_members = []
    for c, field in top_fields.items():
        if c == "event_time" and time_member is not None:
            top_members.append(time_member)
        elif field.native and field.dtype != pl.Null:
            if field.facts.constant is not None:  # the same in every row: a literal
                top_members.append(_Member([_key(c) + json.dumps(field.facts.constant)], False))
            else:
                top_members.append(_member(c, field))
    if asset_ok:
        asset_members = []
        for name, field in asset_fields.items():
            if name == "attributes":
                if attr_member is not None:
                    asset_members.append(attr_member)
            elif field.native and field.dtype != pl.Null:
                asset_members.append(_member(name, field))
        asset_object = _object(asset_members)
        if nested and asset_nulls:
            present = pl.col("asset").is_not_null()
            top_members.append(
                _Member([_key("asset"), pl.when(present).then(_concat(asset_object))], True)
            )
        else:
            top_members.append(_Member([_key("asset"), *asset_object], False))
    raw = _concat(_object(top_members))

    # Rows where some string holds non-ASCII: their raw (and attributes) get escaped.
    # (the attributes struct's own fields are looked at instead of the struct)
    texts = [
        *top_fields.values(),
        *[v for n, v in asset_fields.items() if not (n == "attributes" and attr_fields)],
        *attr_fields.values(),
    ]
    written = [v for v in texts if v.native and v.facts.constant is None]
    masks = [_ascii_rows(v) for v in written if not v.facts.ascii]
    if json_ascii is not None:
        masks.append(json_ascii)
    ascii_rows: pl.Expr | None = pl.lit(False)
    if any(m is None for m in masks):
        ascii_rows = None  # a struct holds text: look at raw itself
    elif masks:
        ascii_rows = pl.any_horizontal([m for m in masks if m is not None])

    bound = _raw_bound(fields) if lazy_raw else None
    if bound is not None:
        # Rows whose raw might exceed the limit: the reference measures them exactly.
        fallback.append(bound > max_event_bytes)
    flags = pl.any_horizontal(fallback) if fallback else pl.lit(False)
    columns = [
        (pl.int_range(pl.len(), dtype=pl.UInt32) + offset).alias(_ROW),
        flags.fill_null(False).alias("__fallback"),
        _first_failing(checks).alias("__check"),
        (raw if bound is None else _NULL_STR).alias("raw"),
        *[_as_string(top_fields.get(n)).alias(n) for n in ("event_id", "tenant", "source", "op")],
        event_time.alias("event_time"),
        *[_as_string(asset_fields.get(n)).alias(n) for n in STRING_ASSET_FIELDS],
        *[
            (_as_strings if n in LIST_ATTRIBUTES else _as_string)(attr_fields.get(n)).alias(n)
            for n in WELL_KNOWN_ATTRIBUTES
        ],
        extras_text.alias("attributes"),
        *[
            _as_strings(asset_fields.get(n))
            .fill_null(pl.lit([], dtype=pl.List(pl.String)))
            .alias(n)
            for n in LIST_ASSET_FIELDS
        ],
        pl.lit(None, dtype=pl.String).alias("patch"),
        pl.lit(origins).alias("origin"),
    ]
    if ascii_rows is not None:
        columns.append(ascii_rows.alias("__ascii"))
    details = _detail(checks)
    if details is not None:
        columns.append(details.alias("__detail"))
    work = frame.lazy().select(columns).collect()
    left = pl.Series(_ROW, [], dtype=pl.UInt32)
    if work.get_column("__fallback").any():
        left = work.filter(pl.col("__fallback")).get_column(_ROW)
        work = work.filter(~pl.col("__fallback"))
    needs = work.get_column("__ascii") if ascii_rows is not None else None
    work = work.with_columns(
        _ascii(work.get_column("attributes"), needs).alias("attributes"),
        *([] if bound is not None else [_ascii(work.get_column("raw"), needs).alias("raw")]),
    )
    partial = _judge(work, checks, max_event_bytes)
    partial.fallback = left
    if not left.len():
        return partial, original.with_row_index(_ROW, offset=offset).clear()
    return partial, original.with_row_index(_ROW, offset=offset).filter(
        pl.col(_ROW).is_in(left.implode())
    )


def _detail(checks: Sequence[_Check]) -> pl.Expr | None:
    """The detail of the first failing check, where some check words it per row."""
    if all(isinstance(c.detail, str) for c in checks):
        return None
    chain: Any = None
    for check in checks:
        detail = pl.lit(check.detail) if isinstance(check.detail, str) else check.detail
        when = check.bad.fill_null(False)
        chain = pl.when(when).then(detail) if chain is None else chain.when(when).then(detail)
    return cast(pl.Expr, chain.otherwise(pl.lit(None, dtype=pl.String)))


def _time_detail(text: str | None) -> str | None:
    """pydantic's detail for an event_time: the regex's words, or fromisoformat's."""
    if text is None or not text.startswith(_TIME_TEXT):
        return text
    value = text.removeprefix(_TIME_TEXT)
    if re.fullmatch(_EVENT_TIME.strip("^$"), value):
        try:
            datetime.fromisoformat(value.upper())
        except ValueError as exc:
            return f"event_time: Value error, {exc}"
    return f"event_time: {NOT_TIME}"


def _judge(work: pl.DataFrame, checks: Sequence[_Check], max_event_bytes: int) -> _Partial:
    """Split decoded rows (EVENT_SCHEMA + __row + __check [+ __detail]) into events and
    rejects: too large first (the reference measures before parsing), then the first failing
    check."""
    # A lazy raw (null) is within the limit: its bound was checked.
    oversized = (work.get_column("raw").str.len_bytes() > max_event_bytes).fill_null(False)
    failing = work.get_column("__check").is_not_null() | oversized
    if not failing.any():  # the common case: no copy
        return _Partial(work.select(*EVENT_SCHEMA, _ROW), _no_rejects(), _no_rows())
    bad = work.filter(failing)
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
        _NULL_BYTES.alias("raw_bytes"),  # JSON text built here is UTF-8
        "origin",
        _ROW,
    )
    details = rejects.get_column("detail")
    if details.str.starts_with(_TIME_TEXT).any():
        words = [_time_detail(d) for d in details.to_list()]
        rejects = rejects.with_columns(pl.Series("detail", words, dtype=pl.String))
    events = work.filter(~failing).select(*EVENT_SCHEMA, _ROW)
    return _Partial(events, rejects, _no_rows())


def _no_rows() -> pl.Series:
    return pl.Series(_ROW, [], dtype=pl.UInt32)


def _no_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=_REJECT_COLUMNS)


# --- the reference, for the rows the column-wise path leaves -----------------------------------

_REJECT_FIELDS = {
    "event_id": pl.String(),
    "reason": pl.String(),
    "detail": pl.String(),
    "raw": pl.String(),
    "raw_bytes": pl.Binary(),  # a payload that is not UTF-8, byte for byte
    "origin": pl.String(),
}
_REJECT_COLUMNS = {**_REJECT_FIELDS, _ROW: pl.UInt32()}


def _reference(
    payloads: Sequence[bytes | str], rows: Sequence[int], origins: pl.Series, max_event_bytes: int
) -> _Partial:
    """decode_envelopes on the given payloads, row numbers kept. A payload the reference
    cannot convert at all (a time whose UTC value leaves the calendar) is a bad_event_time."""
    keys = [str(r) for r in rows]
    try:
        decoded = decode_envelopes(payloads, keys, tenant=None, max_event_bytes=max_event_bytes)
    except (OverflowError, ValueError):
        if len(payloads) > 1:
            return _concat_partials(
                [
                    _reference([p], [r], origins, max_event_bytes)
                    for p, r in zip(payloads, rows, strict=True)
                ]
            )
        payload = payloads[0]
        text = payload if isinstance(payload, str) else payload.decode("utf-8", "replace")
        detail = "event_time: not representable in UTC"
        rejected = pl.DataFrame(
            [[None, Reason.BAD_EVENT_TIME.value, detail, text, None, keys[0]]],
            schema=_REJECT_FIELDS,
            orient="row",
        )
        decoded = DecodeResult(empty_events(), rejected)
    row = pl.col("origin").cast(pl.UInt32).alias(_ROW)
    events = decoded.events.with_columns(row)
    rejects = decoded.rejects.select(*_REJECT_FIELDS).with_columns(row)
    events = events.with_columns(origins.gather(events.get_column(_ROW)).alias("origin"))
    rejects = rejects.with_columns(origins.gather(rejects.get_column(_ROW)).alias("origin"))
    return _Partial(
        events.select(*EVENT_SCHEMA, _ROW),
        rejects.cast(_REJECT_COLUMNS),  # type: ignore[arg-type]
        pl.Series(_ROW, [], dtype=pl.UInt32),
    )


def _concat_partials(parts: Sequence[_Partial]) -> _Partial:
    events = [p.events for p in parts if p.events.height]
    rejects = [p.rejects for p in parts if p.rejects.height]
    return _Partial(
        pl.concat(events) if events else _empty_events(),
        pl.concat(rejects) if rejects else pl.DataFrame(schema=_REJECT_COLUMNS),
        pl.Series(_ROW, [], dtype=pl.UInt32),
    )


def _empty_events() -> pl.DataFrame:
    return empty_events().with_columns(pl.lit(None, dtype=pl.UInt32).alias(_ROW)).clear()


def _parquet_payloads(rows: pl.DataFrame) -> list[bytes | str]:
    """The envelope JSON the row-by-row snapshot reader makes of each row."""
    return [
        json.dumps(parquet_envelope(r), separators=(",", ":"), default=_json_value)
        for r in rows.drop(_ROW).iter_rows(named=True)
    ]


# --- tenant rules and the whole ----------------------------------------------------------------


def _tenant_checks(events: pl.DataFrame, tenant: str | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """validation's tenant_format and tenant_binding rules on decoded events, first failing
    rule first: the events that pass, and the rejects of those that do not."""
    rules = [r for r in envelope_rules(tenant) if r.name in TENANT_RULES]
    if not events.height or not rules:
        return events, pl.DataFrame(schema=_REJECT_COLUMNS)
    reason: pl.Expr = _NULL_STR
    detail: pl.Expr = _NULL_STR
    for rule in reversed(rules):
        bad = rule.bad.fill_null(True)
        reason = pl.when(bad).then(pl.lit(rule.reason.value)).otherwise(reason)
        detail = pl.when(bad).then(rule.detail).otherwise(detail)
    flagged = events.with_columns(reason.alias("__reason"), detail.alias("__detail"))
    failing = flagged.get_column("__reason").is_not_null()
    if not failing.any():
        return events, pl.DataFrame(schema=_REJECT_COLUMNS)
    rejects = flagged.filter(failing).select(
        "event_id",
        pl.col("__reason").alias("reason"),
        pl.col("__detail").fill_null("").alias("detail"),
        "raw",
        _NULL_BYTES.alias("raw_bytes"),
        "origin",
        _ROW,
    )
    return flagged.filter(~failing).select(*EVENT_SCHEMA, _ROW), rejects


def _origin_series(origins: pl.Series | str, height: int) -> pl.Series:
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


def decode_frame(
    frame: pl.DataFrame,
    tenant: str | None,
    origins: pl.Series | str,
    max_event_bytes: int,
    *,
    lazy_raw: bool = False,
) -> DecodeResult:
    """Decode a frame of envelopes (nested, flattened or payloads; see the module) into
    events and rejects, as decode_envelopes and the tenant rules would, in row order.

    `tenant` is the tenant the frame is for: events naming another are tenant_mismatch
    rejects, and every reject is filed under it (None: no binding, filed under none).
    `origins` gives each row's origin, or the first row's as `<where>#<n>` (the rows after
    it are `#<n+1>`, …); a payload frame's own `origin` column wins over a string.

    `lazy_raw`: a Parquet event's `raw` is left null (rejects still get theirs). Building
    the JSON of every row cost ~0.6 s of CPU and a copy of the text per 1M rows, and a bulk
    load needs it only for the few rows a later gate refuses: `fill_raw` gives them theirs.
    Rows that might exceed `max_event_bytes` are measured exactly."""
    if _is_payloads(frame):
        if "origin" in frame.columns and isinstance(origins, str):
            origin = frame.get_column("origin").cast(pl.String)
        else:
            origin = _origin_series(origins, frame.height)
        partial = _payloads(frame.get_column("value"), origin, max_event_bytes)
    else:
        origin = _origin_series(origins, frame.height)
        partial, left = _structured_parallel(frame, origin, max_event_bytes, lazy_raw)
        if left.height:
            slow = _reference(
                _parquet_payloads(left), left.get_column(_ROW).to_list(), origin, max_event_bytes
            )
            partial = _concat_partials([partial, slow])
    events, refused = _tenant_checks(partial.events, tenant)
    if not events.get_column(_ROW).is_sorted():
        events = events.sort(_ROW)
    rejects = pl.concat([partial.rejects, refused]) if refused.height else partial.rejects
    if lazy_raw and rejects.get_column("raw").has_nulls():
        rows = rejects.filter(_lacks_raw()).get_column(_ROW)
        rejects = _with_raw(rejects, _raw_by_origin(frame, origin, rows, max_event_bytes))
    events, rejects = events.drop(_ROW), rejects.sort(_ROW).drop(_ROW)
    return DecodeResult(
        events=events if events.height else empty_events(),
        rejects=to_rejects(rejects, tenant) if rejects.height else empty_rejects(),
    )


def fill_raw(
    rejects: pl.DataFrame,
    frame: pl.DataFrame,
    origins: pl.Series | str,
    max_event_bytes: int,
) -> pl.DataFrame:
    """Rejects (REJECT_SCHEMA) of events decoded from `frame` with `lazy_raw`, with the raw
    (and the quarantine id made of it) of those that lack it, found by origin."""
    missing = rejects.select(_lacks_raw()).to_series()
    if not missing.any() or _is_payloads(frame):
        return rejects
    origin = _origin_series(origins, frame.height)
    wanted = rejects.filter(missing).select("origin").unique()
    rows = (
        origin.to_frame()
        .with_row_index(_ROW)
        .join(wanted, on="origin", how="semi")
        .get_column(_ROW)
    )
    filled = _with_raw(rejects, _raw_by_origin(frame, origin, rows, max_event_bytes))
    return filled.with_columns(
        pl.when(missing)
        .then(pl.col("raw").map_elements(quarantine_id, return_dtype=pl.String))
        .otherwise(pl.col("quarantine_id"))
        .alias("quarantine_id")
    )


def _lacks_raw() -> pl.Expr:
    """Rejects whose payload a lazy decode left out (neither text nor bytes)."""
    return pl.col("raw").is_null() & pl.col("raw_bytes").is_null()


def _raw_by_origin(
    frame: pl.DataFrame, origin: pl.Series, rows: pl.Series, max_event_bytes: int
) -> pl.DataFrame:
    """origin → raw of the given rows, decoded again with their raw (they are few)."""
    again = decode_frame(frame[rows], None, origin[rows], max_event_bytes)
    return pl.concat(
        [again.events.select("origin", "raw"), again.rejects.select("origin", "raw")]
    ).unique("origin")


def _with_raw(rows: pl.DataFrame, raw: pl.DataFrame) -> pl.DataFrame:
    return (
        rows.join(raw.rename({"raw": "__raw"}), on="origin", how="left", maintain_order="left")
        .with_columns(pl.coalesce("raw", "__raw").alias("raw"))
        .drop("__raw")
    )


def _is_payloads(frame: pl.DataFrame) -> bool:
    return (
        "value" in frame.columns
        and "asset" not in frame.columns
        and not any(c in frame.columns for c in ENVELOPE_FIELDS)
    )


# --- JSON text: DuckDB's JSON functions type every value row by row --------------------------
#
# polars has no JSON reader that keeps going past a bad row or tells a string from a number,
# so JSON text is read by DuckDB (yyjson) in one query. The rows it shows to be valid, plain
# envelopes are decoded here; every other row (all invalid ones among them) is left to the
# reference, so a reject has the reference's own reason and detail.

_STRING_LEAVES = ("event_id", "tenant", "source", "op", "event_time")
_ASSET_STRINGS = ("type_name", "qualified_name", "name")
_ATTR_STRINGS = ("description", "certificate_status", "parent_qualified_name")
# Where JSON null and absence differ (null is refused, absence defaults) and the root.
_TYPE_PATHS = [
    "$",
    "$.asset",
    "$.asset.attributes",
    *[f"$.asset.{n}" for n in LIST_ASSET_FIELDS],
    *[f"$.asset.attributes.{n}" for n in LIST_ATTRIBUTES],
]
_KEY_PATHS = ["$", "$.asset", "$.asset.attributes"]
_ENVELOPE_LEAVES = json.dumps(
    {
        **dict.fromkeys(_STRING_LEAVES, "JSON"),
        "asset": {
            **dict.fromkeys(_ASSET_STRINGS, "JSON"),
            "attributes": "JSON",
            **{n: ["JSON"] for n in LIST_ASSET_FIELDS},
        },
    }
)
_ATTRIBUTE_LEAVES = json.dumps(
    {n: (["JSON"] if n in LIST_ATTRIBUTES else "JSON") for n in DECLARED_ATTRIBUTES}
)
_UNDECLARE = json.dumps(dict.fromkeys(DECLARED_ATTRIBUTES))  # a merge patch removing them
# Free-form attributes whose minified text is what json.dumps writes of them: no escapes, no
# nested object, no float (those are read by the reference).
_PLAIN_EXTRAS = r"^\{[^\\{}]*\}$"
_FLOAT_TOKEN = r"[:,\[]-?[0-9]+[.eE]"
_EXTRA_MEMBER = r'"[^"]*":(?:"[^"]*"|\[[^\]]*\]|[^,}\]]*)'
# Tokens the two parsers may read differently (NaN, infinities, huge exponents, a BOM).
_ODD_JSON = "NaN|Infinity|[eE][+-]?[0-9]{3}|^\ufeff"


def _string_leaf(leaf: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """A JSON leaf text as (is a string, its value); escapes were resolved by DuckDB into
    the `…_text` twin (see the query), so a plain string is its text less the quotes."""
    return leaf.str.starts_with('"'), leaf.str.slice(1).str.head(-1)


def _string_items(items: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """A list of JSON item texts as (every item a string without escapes, their values)."""
    plain = items.list.eval(pl.element().str.contains(r'^"[^"\\]*"$').fill_null(False)).list.all()
    return plain.fill_null(True), items.list.eval(pl.element().str.slice(1).str.head(-1))


def _sorted_extras(text: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """Plain free-form attributes text with its members in key order, and whether the keys
    sort as Python sorts them (text order can differ from key order only through bytes
    below the closing quote, which such keys are sent away for)."""
    members = text.str.extract_all(_EXTRA_MEMBER).list.sort()
    keys = members.list.eval(pl.element().str.extract(r'^"([^"]*)"', 1))
    ordered = keys.list.eval(pl.element().str.contains(r"^[#-~]*$")).list.all()
    return pl.concat_str([pl.lit("{"), members.list.join(","), pl.lit("}")]), ordered.fill_null(
        True
    )


def _duckdb() -> Any:
    import duckdb

    return duckdb.connect()


def _as_text(values: pl.Series) -> pl.Series:
    """Payloads as text; those that are not UTF-8 become null (the reference words them)."""
    if values.dtype != pl.Binary:
        return values.cast(pl.String)
    try:
        return values.cast(pl.String)
    except pl.exceptions.PolarsError:
        decoded = []
        for v in values.to_list():
            try:
                decoded.append(None if v is None else v.decode("utf-8"))
            except UnicodeDecodeError:
                decoded.append(None)
        return pl.Series(decoded, dtype=pl.String)


def _query(frame: pl.DataFrame, sql: str) -> pl.DataFrame:
    """A DuckDB query over `frame` (as `frame`), given in record batches so that DuckDB
    reads them on every core; rows come back in `__row` order."""
    import pyarrow as pa

    table = pa.Table.from_batches(frame.to_arrow().to_batches(max_chunksize=16_384))
    con = _duckdb()
    try:
        con.register("frame", table)
        return con.sql(sql).pl().sort(_ROW)
    finally:
        con.close()


_ATTR_TYPE_PATHS = ["$", *[f"$.{n}" for n in LIST_ATTRIBUTES]]


def _json_attributes(texts: pl.Series) -> pl.DataFrame:
    """Free-form attributes given as JSON object text (a Parquet string column), read as
    inventory.parquet_envelope reads them (json.loads, nulls dropped): per row whether it
    is plain enough to decode here (`fast`), its object as raw holds it, the sorted
    free-form members, and the well-known attributes."""
    rows = texts.is_not_null().arg_true()
    frame = pl.DataFrame([rows.alias(_ROW), texts.gather(rows).alias("v")])
    types = ", ".join(f"'{p}'" for p in _ATTR_TYPE_PATHS)
    unescape = ",\n".join(
        f"CASE WHEN strpos(a.{n}, '\\') > 0 THEN json_extract_string(a.{n}, '$') END AS {n}_text"
        for n in _ATTR_STRINGS
    )
    parsed = _query(
        frame,
        f"""
        WITH typed AS (
            SELECT {_ROW}, v, try(json_type(v, [{types}])) AS t FROM frame
        ), parsed AS (
            SELECT {_ROW}, v, t,
                CASE WHEN t[1] = 'OBJECT' THEN json_keys(v) END AS keys,
                CASE WHEN t[1] = 'OBJECT' THEN from_json(v, '{_ATTRIBUTE_LEAVES}') END AS a,
                CASE WHEN t[1] = 'OBJECT' THEN json_extract(v, '$')::VARCHAR END AS object,
                CASE WHEN t[1] = 'OBJECT' THEN json_merge_patch(v, '{_UNDECLARE}') END AS extras
            FROM typed
        )
        SELECT {_ROW}, v, t, keys, a, object, extras,
            list_sort(json_keys(extras)) = json_keys(extras) AS in_order, {unescape}
        FROM parsed
        """,
    )
    parsed = _sort_extras(parsed)
    t, a, obj = pl.col("t"), pl.col("a"), pl.col("object")
    ok = [
        t.list.get(0) == "OBJECT",
        ~pl.col("v").str.contains(_ODD_JSON),
        pl.col("keys").list.len() == pl.col("keys").list.n_unique(),
        obj.str.contains(_PLAIN_EXTRAS) & ~obj.str.contains(_FLOAT_TOKEN),
        pl.col("in_order").fill_null(True),
        a.struct.field("lily_patch").is_null(),
    ]
    out = [pl.col(_ROW)]
    for n in _ATTR_STRINGS:
        is_string, value = _string_leaf(a.struct.field(n))
        ok.append(a.struct.field(n).is_null() | is_string)
        out.append(pl.col(f"{n}_text").fill_null(value).alias(n))
    for i, n in enumerate(LIST_ATTRIBUTES, start=1):
        plain, items = _string_items(a.struct.field(n))
        kind = t.list.get(i)
        ok.append(kind.is_null() | (kind == "NULL") | ((kind == "ARRAY") & plain))
        out.append(items.alias(n))

    # Its null members are dropped (parquet_envelope's `_present`); a plain text has no
    # nested object for the pattern to meet.
    def present(text: pl.Expr) -> pl.Expr:
        return text.str.replace_all(r'"[^"]*":null,?', "").str.replace(r",\}$", "}")

    result = parsed.select(
        *out,
        pl.all_horizontal([c.fill_null(False) for c in ok]).alias("fast"),
        present(obj).alias("object"),
        present(pl.col("extras")).alias("extras"),
    )
    full = pl.DataFrame({_ROW: pl.int_range(texts.len(), dtype=pl.UInt32, eager=True)})
    return full.join(result, on=_ROW, how="left").drop(_ROW)


def _sort_extras(parsed: pl.DataFrame) -> pl.DataFrame:
    """Free-form attributes (`extras`) not in key order (`in_order` false; few, usually)
    sorted here; `in_order` false stays only where the sorting cannot be trusted."""
    unsorted = parsed.get_column("in_order").not_().fill_null(False)
    if not unsorted.any():
        return parsed
    rows = unsorted.arg_true()
    text, ordered = _sorted_extras(pl.col("extras"))
    done = parsed[rows].select(text.alias("s"), ordered.alias("o"))
    return parsed.with_columns(
        parsed.get_column("extras").scatter(rows, done.get_column("s")),
        parsed.get_column("in_order").scatter(rows, done.get_column("o")),
    )


def _payloads(payloads: pl.Series, origins: pl.Series, max_event_bytes: int) -> _Partial:
    """Envelope JSON text, one a row (String or Binary): the plain valid envelopes decoded
    column-wise, the rest by the reference."""
    text = _as_text(payloads)
    rows = pl.int_range(payloads.len(), dtype=pl.UInt32, eager=True).alias(_ROW)
    frame = pl.DataFrame([rows, text.alias("v")])
    if not frame.height:
        return _Partial(_empty_events(), _no_rejects(), _no_rows())
    types = ", ".join(f"'{p}'" for p in _TYPE_PATHS)
    keys = ", ".join(f"'{p}'" for p in _KEY_PATHS)
    unescape = [f"e.{n}" for n in _STRING_LEAVES] + [f"e.asset.{n}" for n in _ASSET_STRINGS]
    unescape += [f"a.{n}" for n in _ATTR_STRINGS]
    texts = ",\n".join(
        f"CASE WHEN strpos({x}, '\\') > 0 THEN json_extract_string({x}, '$') END"
        f' AS "{x.replace(".", "_")}_text"'
        for x in unescape
    )
    sql = f"""
        WITH typed AS (
            SELECT {_ROW}, v, try(json_type(v, [{types}])) AS t FROM frame
        ), parsed AS (
            SELECT {_ROW}, t,
                CASE WHEN t[1] = 'OBJECT' THEN json_keys(v, [{keys}]) END AS keys,
                CASE WHEN t[1] = 'OBJECT' THEN from_json(v, '{_ENVELOPE_LEAVES}') END AS e
            FROM typed
        ), nested AS (
            SELECT *,
                CASE WHEN t[3] = 'OBJECT'
                    THEN from_json(e.asset.attributes, '{_ATTRIBUTE_LEAVES}') END AS a,
                CASE WHEN t[3] = 'OBJECT'
                    THEN json_merge_patch(e.asset.attributes, '{_UNDECLARE}') END AS extras
            FROM parsed
        )
        SELECT {_ROW}, t, keys, e, a, extras,
            list_sort(json_keys(extras)) = json_keys(extras) AS in_order, {texts}
        FROM nested
    """
    parsed = _query(frame, sql).with_columns(text.alias("raw"), origins.alias("origin"))

    t = pl.col("t")
    e, a = pl.col("e"), pl.col("a")
    asset = e.struct.field("asset")
    ok = [
        t.list.get(0) == "OBJECT",
        t.list.get(1) == "OBJECT",
        t.list.get(2).is_null() | (t.list.get(2) == "OBJECT"),  # absent, or an object
        ~pl.col("raw").str.contains(_ODD_JSON),
        pl.col("raw").str.len_bytes() <= max_event_bytes,
        pl.col("keys")
        .list.eval(pl.element().list.len() == pl.element().list.n_unique())
        .list.all(),  # no key twice (DuckDB reads the first, Python the last)
    ]

    def string(leaf: pl.Expr, name: str, required: bool) -> pl.Expr:
        is_string, value = _string_leaf(leaf)
        unescaped = pl.col(f"{name}_text")
        if required:
            ok.append(is_string)
        else:
            ok.append(leaf.is_null() | is_string)
        return pl.when(unescaped.is_not_null()).then(unescaped).otherwise(value)

    cols = {n: string(e.struct.field(n), f"e_{n}", True) for n in _STRING_LEAVES}
    cols |= {n: string(asset.struct.field(n), f"e_asset_{n}", True) for n in _ASSET_STRINGS}
    cols |= {n: string(a.struct.field(n), f"a_{n}", False) for n in _ATTR_STRINGS}
    ok.append(cols["op"].is_in(OPS))
    ok.append(a.struct.field("lily_patch").is_null())  # a patch is the reference's to read
    for i, n in enumerate(LIST_ASSET_FIELDS, start=3):
        plain, items = _string_items(asset.struct.field(n))
        ok.append(t.list.get(i).is_null() | ((t.list.get(i) == "ARRAY") & plain))
        cols[n] = items.fill_null(pl.lit([], dtype=pl.List(pl.String)))
    for i, n in enumerate(LIST_ATTRIBUTES, start=3 + len(LIST_ASSET_FIELDS)):
        plain, items = _string_items(a.struct.field(n))
        kind = t.list.get(i)
        ok.append(kind.is_null() | (kind == "NULL") | ((kind == "ARRAY") & plain))
        cols[n] = items
    extras = pl.col("extras")
    parsed = _sort_extras(parsed)
    ok += [
        extras.is_null()
        | (extras.str.contains(_PLAIN_EXTRAS) & ~extras.str.contains(_FLOAT_TOKEN)),
        pl.col("in_order").fill_null(True),
    ]
    times = _event_times(parsed.select(cols["event_time"]).to_series())
    parsed = parsed.with_columns(times.alias("__time"))
    event_time = pl.col("__time")
    ok += [event_time.is_not_null(), ~_year_guard(cols["event_time"])]
    work = parsed.with_columns(pl.all_horizontal([c.fill_null(False) for c in ok]).alias("__fast"))
    slow = work.filter(~pl.col("__fast")).get_column(_ROW)
    fast = work.filter(pl.col("__fast")).select(
        *[cols[n].alias(n) for n in ("event_id", "tenant", "source", "op")],
        event_time.alias("event_time"),
        *[cols[n].alias(n) for n in _ASSET_STRINGS],
        *[cols[n].alias(n) for n in WELL_KNOWN_ATTRIBUTES],
        extras.fill_null(pl.lit("{}")).alias("attributes"),
        *[cols[n].alias(n) for n in LIST_ASSET_FIELDS],
        pl.lit(None, dtype=pl.String).alias("patch"),
        "raw",
        "origin",
        _ROW,
    )
    fast = fast.with_columns(_ascii(fast.get_column("attributes")).alias("attributes"))
    schema = {**EVENT_SCHEMA, _ROW: pl.UInt32()}
    partial = _Partial(fast.cast(schema), _no_rejects(), _no_rows())  # type: ignore[arg-type]
    if slow.len():
        picked = cast(list[bytes | str], payloads.gather(slow).to_list())
        partial = _concat_partials(
            [partial, _reference(picked, slow.to_list(), origins, max_event_bytes)]
        )
    return partial


# --- reading snapshot files --------------------------------------------------------------------

_CHUNK_BYTES = 8 << 20


def scan_envelopes(source: str | Path, batch_rows: int) -> Iterator[tuple[pl.DataFrame, str]]:
    """Every snapshot file under `source` (a file, a directory or an s3:// prefix, as
    `inventory.list_snapshot` lists them) read lazily in frames of at most `batch_rows`
    rows, each with the origin of its first row, `file:<uri>#<n>` (rows and lines from 1).

    Parquet rows come as they are (nested or flattened; `decode_frame` reads both), read by
    polars a slice at a time (only the row groups a slice needs). JSON Lines come as payload
    frames, `origin` (`file:<uri>#<line>`) and `value` (the line's bytes); blank lines are
    skipped, and a line that is not JSON is decoded into a malformed_json reject like any
    other. A batch never spans two files. A file that cannot be read (truncated or corrupt
    Parquet, missing envelope columns, S3 errors) raises InventoryError naming it."""
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
    files = list_snapshot(str(source))
    client = _s3_client() if any(f.uri.startswith("s3://") for f in files) else None
    for file in files:
        if file.uri.startswith("s3://"):
            yield from _s3_frames(client, file, batch_rows)
        elif file.is_parquet:
            yield from _parquet_frames(file, file.uri, batch_rows)
        else:
            try:
                handle = open(file.uri, "rb")  # noqa: SIM115 - closed below; the generator pauses
            except OSError as exc:
                raise InventoryError(f"snapshot {file.uri}: cannot read it ({exc})") from None
            with handle:
                yield from _line_frames(file, _chunks(handle), batch_rows)


def _chunks(handle: IO[bytes]) -> Iterator[bytes]:
    while chunk := handle.read(_CHUNK_BYTES):
        yield chunk


def _s3_frames(
    client: Any, file: SnapshotFile, batch_rows: int
) -> Iterator[tuple[pl.DataFrame, str]]:
    import tempfile

    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = _split_s3(file.uri)
    try:
        if file.is_parquet:  # Parquet needs random access (its footer comes last): spool it
            with tempfile.NamedTemporaryFile(suffix=".parquet") as spool:
                client.download_fileobj(bucket, key, spool)
                spool.flush()
                yield from _parquet_frames(file, spool.name, batch_rows)
        else:
            body = client.get_object(Bucket=bucket, Key=key)["Body"]
            yield from _line_frames(file, body.iter_chunks(_CHUNK_BYTES), batch_rows)
    except (BotoCoreError, ClientError) as exc:
        raise _s3_error(file.uri, "read it", exc) from None


def _parquet_frames(
    file: SnapshotFile, path: str, batch_rows: int
) -> Iterator[tuple[pl.DataFrame, str]]:
    def scan() -> pl.LazyFrame:
        return pl.scan_parquet(path, glob=False, hive_partitioning=False)

    try:
        columns = list(scan().collect_schema())
        rows = cast(int, scan().select(pl.len()).collect().item())
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise _parquet_error(file, exc) from None
    _check_columns(file, columns)
    for start in range(0, rows, batch_rows):
        try:
            frame = scan().slice(start, batch_rows).collect()
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise _parquet_error(file, exc) from None
        yield frame, f"file:{file.uri}#{start + 1}"


def _line_frames(
    file: SnapshotFile, chunks: Iterator[bytes], batch_rows: int
) -> Iterator[tuple[pl.DataFrame, str]]:
    """JSON Lines in payload frames of at most `batch_rows` lines (blank ones dropped)."""
    base = f"file:{file.uri}#"
    first = 1  # number of the first line in `lines`
    lines: list[bytes] = []
    pending = b""

    def frame(lines: list[bytes], first: int) -> tuple[pl.DataFrame, str] | None:
        kept = [
            (n, line.removesuffix(b"\r")) for n, line in enumerate(lines, first) if line.strip()
        ]
        if not kept:
            return None
        numbers = pl.Series([n for n, _ in kept], dtype=pl.UInt64).cast(pl.String)
        values = pl.Series("value", [v for _, v in kept], dtype=pl.Binary)
        out = pl.DataFrame([(base + numbers).alias("origin"), values])
        return out, f"{base}{kept[0][0]}"

    for chunk in chunks:
        parts = (pending + chunk).split(b"\n")
        pending = parts.pop()
        lines.extend(parts)
        while len(lines) >= batch_rows:
            made = frame(lines[:batch_rows], first)
            if made is not None:
                yield made
            lines = lines[batch_rows:]
            first += batch_rows
    if pending:
        lines.append(pending)
    while lines:
        made = frame(lines[:batch_rows], first)
        if made is not None:
            yield made
        lines = lines[batch_rows:]
        first += batch_rows
