"""Free-form attributes given as JSON object text in a Parquet string column, read through
DuckDB as the snapshot reader reads them (json.loads, nulls dropped)."""

from __future__ import annotations

import polars as pl

from lily_dagster.lib.decode import duckdb_json as dj
from lily_dagster.lib.decode.schema import LIST_ATTRIBUTES, ROW, STRING_ATTRIBUTES

_TYPE_PATHS = ["$", *[f"$.{n}" for n in LIST_ATTRIBUTES]]
_SQL = f"""
    WITH typed AS (
        SELECT {ROW}, v, try(json_type(v, [{dj.sql_list(_TYPE_PATHS)}])) AS t FROM frame
    ), parsed AS (
        SELECT {ROW}, v, t,
            CASE WHEN t[1] = 'OBJECT' THEN json_keys(v) END AS keys,
            CASE WHEN t[1] = 'OBJECT' THEN from_json(v, '{dj.ATTRIBUTE_LEAVES}') END AS a,
            CASE WHEN t[1] = 'OBJECT' THEN json_extract(v, '$')::VARCHAR END AS object,
            CASE WHEN t[1] = 'OBJECT' THEN json_merge_patch(v, '{dj.UNDECLARE}') END AS extras
        FROM typed
    )
    SELECT {ROW}, v, t, keys, a, object, extras, {dj.IN_ORDER},
        {", ".join(dj.unescaped(f"a.{n}", f"{n}_text") for n in STRING_ATTRIBUTES)}
    FROM parsed
"""


def json_attributes(texts: pl.Series) -> pl.DataFrame:
    """Per row of `texts` whether it is plain enough to decode here (`fast`), its object as
    raw holds it, the sorted free-form members (`extras`), and the well-known attributes."""
    rows = texts.is_not_null().arg_true()
    frame = pl.DataFrame([rows.alias(ROW), texts.gather(rows).alias("v")])
    parsed = dj.sort_extras(dj.query(frame, _SQL))
    t, a, obj = pl.col("t"), pl.col("a"), pl.col("object")
    ok = [
        t.list.get(0) == "OBJECT",
        ~pl.col("v").str.contains(dj.ODD_JSON),
        pl.col("keys").list.len() == pl.col("keys").list.n_unique(),
        dj.plain_extras(obj),
        pl.col("in_order").fill_null(True),
        a.struct.field("lily_patch").is_null(),
    ]
    out = [pl.col(ROW)]
    for n in STRING_ATTRIBUTES:
        plain, value = dj.string_value(a.struct.field(n), pl.col(f"{n}_text"), required=False)
        ok.append(plain)
        out.append(value.alias(n))
    for i, n in enumerate(LIST_ATTRIBUTES, start=1):
        plain, items = dj.list_attribute(a.struct.field(n), t.list.get(i))
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
