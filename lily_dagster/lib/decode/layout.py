"""A nested or flattened frame's envelope leaves: the top-level columns, the asset's fields
(an `asset` struct, or `asset_*` columns) and the attributes struct's fields, each with what
it holds (one pass over the frame), and the rows holding values this path does not write."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from lily_dagster.lib.decode.dtypes import float_guard, normal
from lily_dagster.lib.decode.facts import Field, Leaf, fields


@dataclass(frozen=True)
class Layout:
    frame: pl.DataFrame  # the frame with its dtypes as Python sees them
    nested: bool  # an `asset` struct (else `asset_*` columns)
    asset_ok: bool  # the asset's fields can be read (flattened, or a struct)
    asset_nulls: bool  # nested, and some row has no asset
    unreadable_asset: bool  # nested, and the asset is neither a struct nor null
    fields: dict[str, Field]  # every leaf: `top.<column>`, `asset.<name>`, `attr.<name>`
    top: dict[str, Field]  # the top-level columns
    asset: dict[str, Field]  # the asset's fields


def read_layout(original: pl.DataFrame) -> Layout:
    """The frame's leaves as fields."""
    schema = {c: normal(d) for c, d in original.schema.items()}
    same = schema == dict(original.schema)
    frame = original if same else original.cast(schema)  # type: ignore[arg-type]
    nested = "asset" in frame.schema
    asset_dtype = frame.schema["asset"] if nested else None
    struct = isinstance(asset_dtype, pl.Struct)
    top = [c for c in frame.columns if c != "asset" and not c.startswith("asset_")]
    leaves = {f"top.{c}": Leaf(pl.col(c), frame.get_column(c), constant=True) for c in top}
    asset_leaves = _asset_leaves(frame, nested)
    leaves |= asset_leaves
    leaves |= _attribute_leaves(leaves.get("asset.attributes"))
    all_fields = fields(leaves)
    return Layout(
        frame=frame,
        nested=nested,
        asset_ok=not nested or struct,
        asset_nulls=nested and frame.get_column("asset").null_count() > 0,
        unreadable_asset=nested and not struct and asset_dtype != pl.Null,
        fields=all_fields,
        top={c: all_fields[f"top.{c}"] for c in top},
        asset={k.removeprefix("asset."): all_fields[k] for k in asset_leaves},
    )


def _asset_leaves(frame: pl.DataFrame, nested: bool) -> dict[str, Leaf]:
    """`asset.<name>` of each field of the asset struct, or of each `asset_<name>` column."""
    leaves: dict[str, Leaf] = {}
    asset_dtype = frame.schema["asset"] if nested else None
    if nested and isinstance(asset_dtype, pl.Struct):
        asset = frame.get_column("asset")
        for f in asset_dtype.fields:
            leaves[f"asset.{f.name}"] = Leaf(
                pl.col("asset").struct.field(f.name), asset.struct.field(f.name)
            )
    elif not nested:
        for c in frame.columns:
            if c.startswith("asset_"):
                name = c.removeprefix("asset_")
                leaves[f"asset.{name}"] = Leaf(pl.col(c), frame.get_column(c))
    return leaves


def _attribute_leaves(attr_leaf: Leaf | None) -> dict[str, Leaf]:
    """`attr.<name>` of each field of an attributes struct."""
    if attr_leaf is None or not isinstance(attr_leaf.dtype, pl.Struct):
        return {}
    return {
        f"attr.{f.name}": Leaf(
            attr_leaf.expr.struct.field(f.name), attr_leaf.series.struct.field(f.name)
        )
        for f in attr_leaf.dtype.fields
    }


def unsafe_rows(field: Field) -> list[pl.Expr]:
    """Rows with values this path does not write: they go to the reference."""
    if not field.native:
        return [field.expr.is_not_null()]
    if field.dtype == pl.Float64 and field.facts.unsafe_floats:
        return [float_guard(field.expr)]
    return []


def layout_fallback(layout: Layout) -> list[pl.Expr]:
    """Rows the reference decodes because of their top-level columns or asset fields (the
    attributes and event_time are looked at by their own steps)."""
    rows = []
    if layout.unreadable_asset:
        rows.append(pl.col("asset").is_not_null())  # not an object: the reference says why
    for c, field in layout.top.items():
        if not (c == "event_time" and isinstance(field.dtype, (pl.Datetime, pl.Date))):
            rows += unsafe_rows(field)
    for name, field in layout.asset.items():
        if name != "attributes":
            rows += unsafe_rows(field)
    return rows
