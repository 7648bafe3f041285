"""Payload frames (envelope JSON text, one a row: JSON Lines, landed Kafka messages) decoded
column-wise: DuckDB reads every row's key lists, then its leaves under a structure made for
the batch (`duckdb_json`); the rows they show to be valid, plain envelopes are decoded here,
every other row (all invalid ones among them) is left to the reference, so a reject has the
reference's own reason and detail and every row's `raw` is its text, byte for byte."""

from __future__ import annotations

from typing import Any, cast

import polars as pl

from lily_dagster.lib.decode import duckdb_json as dj
from lily_dagster.lib.decode import json_leaves as jv
from lily_dagster.lib.decode.event_time import event_times, year_guard
from lily_dagster.lib.decode.json_text import ensure_ascii
from lily_dagster.lib.decode.partial import Partial, concat_partials, no_events, no_rejects, no_rows
from lily_dagster.lib.decode.reference import reference
from lily_dagster.lib.decode.schema import (
    DECLARED_ATTRIBUTES,
    ENVELOPE_FIELDS,
    LIST_ASSET_FIELDS,
    LIST_ATTRIBUTES,
    OPS,
    ROW,
    STRING_ASSET_FIELDS,
    STRING_ATTRIBUTES,
)
from lily_dagster.lib.envelope import EVENT_SCHEMA, WELL_KNOWN_ATTRIBUTES

_KEYS = dj.keys_sql(["$", "$.asset", "$.asset.attributes"], attributes=2)
# Attributes that are not an object (from_json would read them as an empty one); a
# free-form key of that name sends its row along too (rare, and the reference is exact).
_NOT_AN_OBJECT = r'"attributes"[ \t\r\n]*:[ \t\r\n]*[^{ \t\r\n]'
_TOP, _ASSET, _ATTRIBUTES = (pl.col(f"keys_{i}") for i in range(3))
# String leaves whose escapes DuckDB resolves (paths under `e`).
_STRINGS = [
    *ENVELOPE_FIELDS,
    *[f"asset.{n}" for n in STRING_ASSET_FIELDS],
    *[f"asset.attributes.{n}" for n in STRING_ATTRIBUTES],
]


def _structure(free_form: list[str]) -> dict[str, Any]:
    """The leaves read, each as its JSON text: the envelope's and the free-form ones."""
    return {
        **dict.fromkeys(ENVELOPE_FIELDS, "JSON"),
        "asset": {
            **dict.fromkeys(STRING_ASSET_FIELDS, "JSON"),
            "attributes": dict.fromkeys([*DECLARED_ATTRIBUTES, *free_form], "JSON"),
            **dict.fromkeys(LIST_ASSET_FIELDS, "JSON"),
        },
    }


def as_text(values: pl.Series) -> pl.Series:
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


def decode_payloads(
    payloads: pl.Series, origins: pl.Series, max_event_bytes: int, lazy_raw: bool = False
) -> Partial:
    """Envelope JSON text, one a row (String or Binary): the plain valid envelopes decoded
    column-wise (without their `raw` when `lazy_raw`), the rest by the reference."""
    text = as_text(payloads).alias("v")
    rows = pl.int_range(payloads.len(), dtype=pl.UInt32, eager=True).alias(ROW)
    v = pl.col("v")
    frame = pl.DataFrame([rows, text]).filter(
        (v.str.len_bytes() <= max_event_bytes) & ~dj.lenient(v) & ~v.str.contains(_NOT_AN_OBJECT)
    )  # null text (not UTF-8), oversized, lenient JSON, odd attributes: the reference's
    fast = _fast(frame, None if lazy_raw else text, origins) if frame.height else no_events()
    slow = _rows_left(payloads.len(), fast.get_column(ROW))
    partial = Partial(fast, no_rejects(), no_rows())
    if slow.len():
        picked = cast(list[bytes | str], payloads.gather(slow).to_list())
        partial = concat_partials(
            [partial, reference(picked, slow.to_list(), origins, max_event_bytes)]
        )
    return partial


def _fast(frame: pl.DataFrame, text: pl.Series | None, origins: pl.Series) -> pl.DataFrame:
    """The events of the rows of `frame` (`__row`, `v`) that are plain valid envelopes, their
    `raw` from `text` (null without)."""
    with dj.registered(frame) as query:
        keys = query(_KEYS)
        free_form = jv.free_form_keys(keys.get_column("keys_2"))
        leaves = query(dj.leaves_sql(_structure(free_form), _STRINGS))
    parsed = keys.hstack(leaves.drop(ROW))
    attributes = pl.col("e").struct.field("asset").struct.field("attributes")
    parsed = jv.free_form(parsed, attributes, free_form, _ATTRIBUTES)
    values, ok = _values()
    times = event_times(parsed.select(values["event_time"]).to_series())
    parsed = parsed.with_columns(times.alias("__time"))
    ok += [pl.col("__time").is_not_null(), ~year_guard(values["event_time"])]
    plain = pl.all_horizontal([c.fill_null(False) for c in ok])
    return _events(parsed.filter(plain), values, text, origins)


def _rows_left(height: int, decoded: pl.Series) -> pl.Series:
    """The row numbers (in order) not among `decoded`."""
    every = pl.int_range(height, dtype=pl.UInt32, eager=True)
    return every.filter(~every.is_in(decoded)).alias(ROW)


def _values() -> tuple[dict[str, pl.Expr], list[pl.Expr]]:
    """The event's values from the leaves, and what a row must be for them to be its values
    (event_time aside: its reading is eager)."""
    e = pl.col("e")
    asset = e.struct.field("asset")
    a = asset.struct.field("attributes")
    values: dict[str, pl.Expr] = {}
    ok = [
        jv.unique_keys(_TOP, _ASSET, _ATTRIBUTES),
        pl.col("extras_whole"),
        jv.plain_extras(pl.col("extras")),
        a.struct.field("lily_patch").is_null(),  # a patch is the reference's to read
    ]
    strings = [
        *[(n, e.struct.field(n), f"{n}_text", True) for n in ENVELOPE_FIELDS],
        *[(n, asset.struct.field(n), f"asset_{n}_text", True) for n in STRING_ASSET_FIELDS],
        *[(n, a.struct.field(n), f"asset_attributes_{n}_text", False) for n in STRING_ATTRIBUTES],
    ]
    for n, leaf, twin, required in strings:
        plain, values[n] = jv.string_value(leaf, pl.col(twin), required)
        ok.append(plain)
    ok.append(values["op"].is_in(OPS))
    for n in LIST_ASSET_FIELDS:
        plain, items = jv.list_value(asset.struct.field(n))
        ok.append(plain & (asset.struct.field(n).is_not_null() | _absent(n)))
        values[n] = items.fill_null(pl.lit([], dtype=pl.List(pl.String)))
    for n in LIST_ATTRIBUTES:
        plain, values[n] = jv.list_value(a.struct.field(n))
        ok.append(plain)
    return values, ok


def _absent(member: str) -> pl.Expr:
    """The asset has no such member (null is a value: refused where absence defaults)."""
    return _ASSET.list.contains(member).not_()


def _events(
    fast: pl.DataFrame, values: dict[str, pl.Expr], text: pl.Series | None, origins: pl.Series
) -> pl.DataFrame:
    """The plain rows as events (EVENT_SCHEMA + __row), free-form attributes ASCII-escaped."""
    rows = fast.get_column(ROW)
    every = rows.len() == origins.len()  # then rows are 0…n-1: no copy
    events = fast.select(
        *[values[n].alias(n) for n in ("event_id", "tenant", "source", "op")],
        pl.col("__time").alias("event_time"),
        *[values[n].alias(n) for n in STRING_ASSET_FIELDS],
        *[values[n].alias(n) for n in WELL_KNOWN_ATTRIBUTES],
        pl.col("extras").alias("attributes"),
        *[values[n].alias(n) for n in LIST_ASSET_FIELDS],
        pl.lit(None, dtype=pl.String).alias("patch"),
        _gathered(text, rows, every).alias("raw"),
        _gathered(origins, rows, every).alias("origin"),
        pl.col(ROW),
    )
    events = events.with_columns(ensure_ascii(events.get_column("attributes")).alias("attributes"))
    schema = {**EVENT_SCHEMA, ROW: pl.UInt32()}
    return events.cast(schema)  # type: ignore[arg-type]


def _gathered(column: pl.Series | None, rows: pl.Series, every: bool) -> pl.Series | pl.Expr:
    if column is None:
        return pl.lit(None, dtype=pl.String)
    return column if every else column.gather(rows)
