"""Nested and flattened frames (Parquet rows) decoded column-wise: the steps of each part of
the envelope put together into one query of events, reject reasons and `raw`, large frames
cut into slices decoded on every polars thread."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import polars as pl

from lily_dagster.lib.decode.attributes import Attributes, attributes
from lily_dagster.lib.decode.checks import (
    Check,
    failing_detail,
    first_failing,
    list_checks,
    string_checks,
)
from lily_dagster.lib.decode.facts import Field
from lily_dagster.lib.decode.json_text import ensure_ascii
from lily_dagster.lib.decode.layout import Layout, layout_fallback, read_layout
from lily_dagster.lib.decode.partial import Partial, concat_partials
from lily_dagster.lib.decode.raw import non_ascii_rows, raw_bound, raw_text
from lily_dagster.lib.decode.rejects import judge
from lily_dagster.lib.decode.schema import (
    LIST_ASSET_FIELDS,
    LIST_ATTRIBUTES,
    MISSING,
    NOT_OP,
    NULL_STR,
    OPS,
    ROW,
    STRING_ASSET_FIELDS,
)
from lily_dagster.lib.decode.time_field import TimeField, time_field
from lily_dagster.lib.envelope import WELL_KNOWN_ATTRIBUTES
from lily_dagster.lib.reasons import Reason

PARALLEL_MIN_ROWS = 50_000  # slices smaller than this are not worth a thread


def structured_parallel(
    frame: pl.DataFrame, origins: pl.Series, max_event_bytes: int, lazy_raw: bool = False
) -> tuple[Partial, pl.DataFrame]:
    """`structured` on slices of a large frame at once, one a polars thread (polars runs
    without the GIL): the text building is what costs, and it is per row."""
    workers = pl.thread_pool_size()
    if workers < 2 or frame.height < 2 * PARALLEL_MIN_ROWS:
        return structured(frame, origins, max_event_bytes, lazy_raw=lazy_raw)
    size = -(-frame.height // workers)
    starts = range(0, frame.height, size)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bulk-decode") as pool:
        done = list(
            pool.map(
                lambda start: structured(
                    frame.slice(start, size),
                    origins.slice(start, size),
                    max_event_bytes,
                    start,
                    lazy_raw,
                ),
                starts,
            )
        )
    partial = concat_partials([p for p, _ in done])
    partial.fallback = pl.concat([p.fallback for p, _ in done])
    return partial, pl.concat([left for _, left in done])


def structured(
    original: pl.DataFrame,
    origins: pl.Series,
    max_event_bytes: int,
    offset: int = 0,
    lazy_raw: bool = False,
) -> tuple[Partial, pl.DataFrame]:
    """Decode a nested or flattened frame (rows numbered from `offset`); returns the partial
    result and the original rows left to the reference (with their row numbers). With
    `lazy_raw`, `raw` is left null (see decode_frame)."""
    layout = read_layout(original)
    attrs = attributes(layout.asset.get("attributes"), layout.fields)
    time = time_field(layout.top.get("event_time"))
    checks = _checks(layout, time, attrs)
    raw = raw_text(layout, time.member, attrs.member)
    ascii_rows = non_ascii_rows(layout, attrs.fields, attrs.json_ascii)
    fallback = [*layout_fallback(layout), *attrs.fallback, *time.fallback]
    bound = raw_bound(layout.fields) if lazy_raw else None
    if bound is not None:
        # Rows whose raw might exceed the limit: the reference measures them exactly.
        fallback.append(bound > max_event_bytes)
    columns = [
        (pl.int_range(pl.len(), dtype=pl.UInt32) + offset).alias(ROW),
        (pl.any_horizontal(fallback) if fallback else pl.lit(False))
        .fill_null(False)
        .alias("__fallback"),
        first_failing(checks).alias("__check"),
        (raw if bound is None else NULL_STR).alias("raw"),
        *_event_columns(layout, time, attrs),
        pl.lit(origins).alias("origin"),
    ]
    if ascii_rows is not None:
        columns.append(ascii_rows.alias("__ascii"))
    details = failing_detail(checks)
    if details is not None:
        columns.append(details.alias("__detail"))
    work = layout.frame.lazy().select(columns).collect()
    work, left = _split_fallback(work)
    work = _escape(work, ascii_rows is not None, escape_raw=bound is None)
    partial = judge(work, checks, max_event_bytes)
    partial.fallback = left
    return partial, _left_rows(original, left, offset)


def _checks(layout: Layout, time: TimeField, attrs: Attributes) -> list[Check]:
    """The checks, in the order pydantic reports them."""
    top, asset = layout.top, layout.asset
    checks: list[Check] = []
    for name in ("event_id", "tenant", "source"):
        checks += string_checks(top.get(name), name)
    op = top.get("op")
    checks += string_checks(op, "op", wrong=Reason.UNKNOWN_OP, message=NOT_OP)
    if op is not None and op.dtype == pl.String and op.facts.constant not in OPS:
        checks.append(Check(~op.expr.is_in(OPS), Reason.UNKNOWN_OP, f"op: {NOT_OP}"))
    checks += time.checks
    if layout.nested and (layout.asset_nulls or not layout.asset_ok):
        checks.append(Check(pl.col("asset").is_null(), Reason.MISSING_FIELD, f"asset: {MISSING}"))
    if layout.asset_ok:
        for name in STRING_ASSET_FIELDS:
            checks += string_checks(asset.get(name), f"asset.{name}")
        checks += attrs.checks
        for name in LIST_ASSET_FIELDS:
            checks += list_checks(asset.get(name), f"asset.{name}")
    return checks


def _as_strings(field: Field | None) -> pl.Expr:
    """The column as the event's list of strings (rows where it is anything else are
    rejected, so only null and empty lists of other item types get here)."""
    if field is None or not isinstance(field.dtype, pl.List):
        return pl.lit(None, dtype=pl.List(pl.String))
    if field.dtype.inner == pl.String:
        return field.expr
    return field.expr.cast(pl.List(pl.String), strict=False)


def _as_string(field: Field | None) -> pl.Expr:
    return field.expr if field is not None and field.dtype == pl.String else NULL_STR


def _event_columns(layout: Layout, time: TimeField, attrs: Attributes) -> list[pl.Expr]:
    """The event's columns from `event_id` to `patch` (EVENT_SCHEMA less raw and origin)."""
    top, asset, attr_fields = layout.top, layout.asset, attrs.fields
    no_items = pl.lit([], dtype=pl.List(pl.String))
    return [
        *[_as_string(top.get(n)).alias(n) for n in ("event_id", "tenant", "source", "op")],
        time.value.alias("event_time"),
        *[_as_string(asset.get(n)).alias(n) for n in STRING_ASSET_FIELDS],
        *[
            (_as_strings if n in LIST_ATTRIBUTES else _as_string)(attr_fields.get(n)).alias(n)
            for n in WELL_KNOWN_ATTRIBUTES
        ],
        attrs.extras.alias("attributes"),
        *[_as_strings(asset.get(n)).fill_null(no_items).alias(n) for n in LIST_ASSET_FIELDS],
        pl.lit(None, dtype=pl.String).alias("patch"),
    ]


def _split_fallback(work: pl.DataFrame) -> tuple[pl.DataFrame, pl.Series]:
    """The decoded rows this path keeps, and the row numbers of those it leaves."""
    if not work.get_column("__fallback").any():
        return work, pl.Series(ROW, [], dtype=pl.UInt32)
    left = work.filter(pl.col("__fallback")).get_column(ROW)
    return work.filter(~pl.col("__fallback")), left


def _escape(work: pl.DataFrame, has_ascii: bool, escape_raw: bool) -> pl.DataFrame:
    """Non-ASCII escaped in the attributes text and (when built) raw, as ensure_ascii does."""
    needs = work.get_column("__ascii") if has_ascii else None
    return work.with_columns(
        ensure_ascii(work.get_column("attributes"), needs).alias("attributes"),
        *([ensure_ascii(work.get_column("raw"), needs).alias("raw")] if escape_raw else []),
    )


def _left_rows(original: pl.DataFrame, left: pl.Series, offset: int) -> pl.DataFrame:
    """The original rows of the given row numbers, numbered (`__row`) from `offset`."""
    numbered = original.with_row_index(ROW, offset=offset)
    if not left.len():
        return numbered.clear()
    return numbered.filter(pl.col(ROW).is_in(left.implode()))
