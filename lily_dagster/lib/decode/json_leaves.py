"""JSON leaf texts (as DuckDB gives them, minified) read into event values column-wise, with
what a row must be for them to be exactly what Python reads: strings, lists of strings, and
the free-form attributes as json.dumps writes them."""

from __future__ import annotations

import json

import polars as pl

from lily_dagster.lib.decode.schema import DECLARED_ATTRIBUTES

# Free-form keys a batch reads column-wise (the most common ones): a row holding others is
# the reference's.
MAX_FREE_FORM_KEYS = 48
# Free-form attributes whose minified text is what json.dumps writes of them: no escapes, no
# nested object, no float (those are read by the reference).
_PLAIN_EXTRAS = r"^\{[^\\{}]*\}$"
_FLOAT_TOKEN = r"[:,\[]-?[0-9]+[.eE]"
_PLAIN_LIST = r'^\[(?:"[^"\\]*"(?:,"[^"\\]*")*)?\]$'  # minified, strings without escapes
_EMPTY = pl.lit([], dtype=pl.List(pl.String))


def string_value(leaf: pl.Expr, unescaped_text: pl.Expr, required: bool) -> tuple[pl.Expr, pl.Expr]:
    """A string leaf as (its row is plain, its value): a string, or (when not `required`)
    absent or null; its value from DuckDB's unescaped text where it has escapes (see
    duckdb_json.leaves_sql), else its text less the quotes."""
    is_string = leaf.str.starts_with('"')
    ok = is_string if required else leaf.is_null() | is_string
    plain = leaf.str.slice(1).str.head(-1)
    return ok, pl.when(unescaped_text.is_not_null()).then(unescaped_text).otherwise(plain)


def list_value(leaf: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """An array leaf as (absent, null or an array of strings without escapes, its items);
    null where absent or null."""
    plain = leaf.is_null() | leaf.str.contains(_PLAIN_LIST)
    items = leaf.str.head(-2).str.slice(2).str.split('","')
    return plain, pl.when(leaf == "[]").then(_EMPTY).otherwise(items)


def unique_keys(*keys: pl.Expr) -> pl.Expr:
    """No key twice in any of the key lists (DuckDB reads the first, Python the last)."""
    return pl.all_horizontal([(k.list.n_unique() == k.list.len()).fill_null(True) for k in keys])


def free_form_keys(attribute_keys: pl.Series) -> list[str]:
    """The free-form attribute keys of a batch to read column-wise (the most common, at most
    MAX_FREE_FORM_KEYS; none that needs an escape, nor two that differ only in case, which
    DuckDB's structures cannot hold), in the order json.dumps sorts them."""
    keys = attribute_keys.explode().drop_nulls()
    keys = keys.filter(~keys.is_in(DECLARED_ATTRIBUTES) & ~keys.str.contains(r'[\\"]'))
    seen = {folded for n in DECLARED_ATTRIBUTES for folded in (n.lower(), n.casefold())}
    kept: list[str] = []
    for key in keys.value_counts(sort=True).get_column(keys.name).to_list():
        folded = {key.lower(), key.casefold()}
        if not folded & seen and len(kept) < MAX_FREE_FORM_KEYS:
            kept.append(key)
        seen |= folded
    return sorted(kept)


def free_form(
    frame: pl.DataFrame, attributes: pl.Expr, keys: list[str], attribute_keys: pl.Expr
) -> pl.DataFrame:
    """`frame` with its free-form attributes as json.dumps writes them (`extras`, non-ASCII
    aside) and whether that text holds every one of them (`extras_whole`). `attributes`
    holds a JSON leaf per key of `keys`; `extra_count` says how many the row has. A member
    whose value is null is told from an absent one by `attribute_keys` (rare: only where
    the counts differ)."""
    leaves = [attributes.struct.field(k) for k in keys]
    read = pl.sum_horizontal([v.is_not_null() for v in leaves]) if keys else pl.lit(0)
    frame = frame.with_columns(_object(leaves, keys).alias("extras"), read.alias("__read"))
    short = frame.get_column("__read") < frame.get_column("extra_count")
    if short.any():
        rows = short.arg_true()
        nulls = [v.fill_null(pl.when(attribute_keys.list.contains(k)).then(pl.lit("null")))
                 for v, k in zip(leaves, keys, strict=True)]  # fmt: skip
        redone = frame[rows].select(
            _object(nulls, keys), pl.sum_horizontal([v.is_not_null() for v in nulls])
        )
        frame = frame.with_columns(
            frame.get_column("extras").scatter(rows, redone.to_series(0)),
            frame.get_column("__read").scatter(rows, redone.to_series(1)),
        )
    whole = pl.col("__read") == pl.col("extra_count")
    return frame.with_columns(whole.alias("extras_whole")).drop("__read")


def _object(values: list[pl.Expr], keys: list[str]) -> pl.Expr:
    """`{"key":value,…}` of the non-null values, in the given key order (non-ASCII as it is:
    the event's text is escaped whole)."""
    if not keys:
        return pl.lit("{}")
    members = [
        pl.concat_str([pl.lit(json.dumps(k, ensure_ascii=False) + ":"), v])
        for k, v in zip(keys, values, strict=True)
    ]
    inner = pl.concat_str(members, separator=",", ignore_nulls=True)
    return pl.concat_str([pl.lit("{"), inner, pl.lit("}")])


def plain_extras(text: pl.Expr) -> pl.Expr:
    """Free-form attributes text as json.dumps writes it (see _PLAIN_EXTRAS)."""
    return text.str.contains(_PLAIN_EXTRAS) & ~text.str.contains(_FLOAT_TOKEN)
