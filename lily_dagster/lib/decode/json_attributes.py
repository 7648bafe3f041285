"""Free-form attributes given as JSON object text in a Parquet string column, read through
DuckDB as the snapshot reader reads them (json.loads, nulls dropped): the key lists, then
the leaves under a structure made for the batch (`duckdb_json`)."""

from __future__ import annotations

import polars as pl

from lily_dagster.lib.decode import duckdb_json as dj
from lily_dagster.lib.decode import json_leaves as jv
from lily_dagster.lib.decode.schema import (
    DECLARED_ATTRIBUTES,
    LIST_ATTRIBUTES,
    ROW,
    STRING_ATTRIBUTES,
)

# The object as the snapshot reader writes it back (minified, in its own key order).
_KEYS = dj.keys_sql(["$"], attributes=0, also=", try(json(v)) AS object")


def json_attributes(texts: pl.Series) -> pl.DataFrame:
    """Per row of `texts` whether it is plain enough to decode here (`fast`), its object as
    raw holds it, the sorted free-form members (`extras`), and the well-known attributes."""
    rows = texts.is_not_null().arg_true()
    frame = pl.DataFrame([rows.alias(ROW), texts.gather(rows).alias("v")])
    frame = frame.filter(~dj.lenient(pl.col("v")))  # the reference's to read
    with dj.registered(frame) as query:
        keys = query(_KEYS)
        free_form = jv.free_form_keys(keys.get_column("keys_0"))
        structure = dict.fromkeys([*DECLARED_ATTRIBUTES, *free_form], "JSON")
        leaves = query(dj.leaves_sql(structure, STRING_ATTRIBUTES))
    parsed = jv.free_form(keys.hstack(leaves.drop(ROW)), pl.col("e"), free_form, pl.col("keys_0"))
    a, obj = pl.col("e"), pl.col("object")
    ok = [
        jv.unique_keys(pl.col("keys_0")),
        jv.plain_extras(obj),  # an object; no escapes, nested object or float anywhere
        pl.col("extras_whole"),
        a.struct.field("lily_patch").is_null(),
    ]
    out = [pl.col(ROW)]
    for n in STRING_ATTRIBUTES:
        plain, value = jv.string_value(a.struct.field(n), pl.col(f"{n}_text"), required=False)
        ok.append(plain)
        out.append(value.alias(n))
    for n in LIST_ATTRIBUTES:
        plain, items = jv.list_value(a.struct.field(n))
        ok.append(plain)
        out.append(items.alias(n))
    result = parsed.select(
        *out,
        pl.all_horizontal([c.fill_null(False) for c in ok]).alias("fast"),
        _present(obj).alias("object"),
        _present(pl.col("extras")).alias("extras"),
    )
    full = pl.DataFrame({ROW: pl.int_range(texts.len(), dtype=pl.UInt32, eager=True)})
    return full.join(result, on=ROW, how="left").drop(ROW)


def _present(text: pl.Expr) -> pl.Expr:
    """Object text without its null members (parquet_envelope's `_present`); a plain text
    has no nested object for the pattern to meet."""
    return text.str.replace_all(r'"[^"]*":null,?', "").str.replace(r",\}$", "}")
