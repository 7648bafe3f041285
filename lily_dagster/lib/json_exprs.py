"""JSON built column-wise in polars: objects spliced from encoded parts, without a Python
object per row (the bulk paths build millions of them)."""

from __future__ import annotations

import polars as pl

_NULL_MEMBER = r'"[A-Za-z_]+":null,?'


def inner(json_obj: pl.Expr) -> pl.Expr:
    """`{...}` → `...`, null when empty: the members, to splice into another object."""
    return json_obj.str.strip_prefix("{").str.strip_suffix("}").replace("", None)


def members(fields: list[pl.Expr], keep_nulls: bool) -> pl.Expr:
    """The fields as JSON object members (`"a":1,"b":"x"`), null members left out unless
    `keep_nulls`. Field names must be plain identifiers: a quote inside a value is
    escaped, so the null pattern only meets our own members."""
    encoded = pl.struct(fields).struct.json_encode()
    if not keep_nulls:
        encoded = encoded.str.replace_all(_NULL_MEMBER, "").str.replace(",}", "}", literal=True)
    return inner(encoded)


def value(expr: pl.Expr) -> pl.Expr:
    """One value as JSON text (a string quoted and escaped, a list as an array, ...)."""
    return inner(pl.struct(expr.alias("v")).struct.json_encode()).str.strip_prefix('"v":')


def obj(parts: list[pl.Expr]) -> pl.Expr:
    """An object from member lists (each possibly null)."""
    return pl.concat_str(
        [pl.lit("{"), pl.concat_str(parts, separator=",", ignore_nulls=True), pl.lit("}")]
    )
