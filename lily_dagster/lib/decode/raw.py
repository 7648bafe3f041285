"""`raw` of a nested or flattened row: the compact JSON the snapshot reader writes of it
(its columns in order, the asset object last, non-ASCII escaped), the rows whose text needs
escaping, and an upper bound of its length for when it is left to be built later."""

from __future__ import annotations

import json

import polars as pl

from lily_dagster.lib.decode.dtypes import DType
from lily_dagster.lib.decode.facts import Field
from lily_dagster.lib.decode.json_text import Member, concat, key, member, object_parts
from lily_dagster.lib.decode.layout import Layout
from lily_dagster.lib.decode.schema import NON_ASCII


def raw_text(layout: Layout, time_member: Member | None, attr_member: Member | None) -> pl.Expr:
    """The envelope's columns in order, the asset object last (inventory.parquet_envelope);
    event_time and the attributes as their own steps write them."""
    top_members = []
    for c, field in layout.top.items():
        if c == "event_time" and time_member is not None:
            top_members.append(time_member)
        elif field.native and field.dtype != pl.Null:
            if field.facts.constant is not None:  # the same in every row: a literal
                top_members.append(Member([key(c) + json.dumps(field.facts.constant)], False))
            else:
                top_members.append(member(c, field))
    if layout.asset_ok:
        top_members.append(_asset_member(layout, attr_member))
    return concat(object_parts(top_members))


def _asset_member(layout: Layout, attr_member: Member | None) -> Member:
    """`"asset":{…}`, absent in the rows without an asset."""
    asset_members = []
    for name, field in layout.asset.items():
        if name == "attributes":
            if attr_member is not None:
                asset_members.append(attr_member)
        elif field.native and field.dtype != pl.Null:
            asset_members.append(member(name, field))
    asset_object = object_parts(asset_members)
    if layout.nested and layout.asset_nulls:
        present = pl.col("asset").is_not_null()
        return Member([key("asset"), pl.when(present).then(concat(asset_object))], True)
    return Member([key("asset"), *asset_object], False)


def non_ascii_rows(
    layout: Layout, attr_fields: dict[str, Field], json_ascii: pl.Expr | None
) -> pl.Expr | None:
    """Rows where some string written in raw holds non-ASCII: their raw (and attributes) get
    escaped. The attributes struct's own fields are looked at instead of the struct. None:
    a struct holds text, so raw itself is looked at."""
    texts = [
        *layout.top.values(),
        *[v for n, v in layout.asset.items() if not (n == "attributes" and attr_fields)],
        *attr_fields.values(),
    ]
    written = [v for v in texts if v.native and v.facts.constant is None]
    masks = [_ascii_rows(v) for v in written if not v.facts.ascii]
    if json_ascii is not None:
        masks.append(json_ascii)
    if any(m is None for m in masks):
        return None
    if masks:
        return pl.any_horizontal([m for m in masks if m is not None])
    return pl.lit(False)


def _ascii_rows(field: Field) -> pl.Expr | None:
    """Rows where a string (or list of strings) column holds non-ASCII; None: unknown."""
    if field.facts.ascii:
        return pl.lit(False)
    if field.dtype == pl.String:
        return field.expr.str.contains(NON_ASCII)
    if isinstance(field.dtype, pl.List) and field.dtype.inner == pl.String:
        return field.expr.list.join("").str.contains(NON_ASCII)
    return None


def raw_bound(fields: dict[str, Field]) -> pl.Expr | None:
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
    """`raw_bound` of one value (and what it holds)."""
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
