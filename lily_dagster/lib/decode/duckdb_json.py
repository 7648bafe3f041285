"""JSON text typed by DuckDB's JSON functions, row by row, in one query.

polars has no JSON reader that keeps going past a bad row or tells a string from a number,
so JSON text is read by DuckDB (yyjson). This module runs such queries and reads what they
give: leaf texts as strings and lists of strings, and free-form members in key order, with
the patterns that tell a text plain enough to be decoded column-wise.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import polars as pl

from lily_dagster.lib.decode.schema import DECLARED_ATTRIBUTES, LIST_ATTRIBUTES, ROW

ATTRIBUTE_LEAVES = json.dumps(
    {n: (["JSON"] if n in LIST_ATTRIBUTES else "JSON") for n in DECLARED_ATTRIBUTES}
)
UNDECLARE = json.dumps(dict.fromkeys(DECLARED_ATTRIBUTES))  # a merge patch removing them
# Whether the free-form members' keys come in sorted order (`extras`: a column of the query).
IN_ORDER = "list_sort(json_keys(extras)) = json_keys(extras) AS in_order"
# Free-form attributes whose minified text is what json.dumps writes of them: no escapes, no
# nested object, no float (those are read by the reference).
_PLAIN_EXTRAS = r"^\{[^\\{}]*\}$"
_FLOAT_TOKEN = r"[:,\[]-?[0-9]+[.eE]"
_EXTRA_MEMBER = r'"[^"]*":(?:"[^"]*"|\[[^\]]*\]|[^,}\]]*)'
# Tokens the two parsers may read differently (NaN, infinities, huge exponents, a BOM).
ODD_JSON = "NaN|Infinity|[eE][+-]?[0-9]{3}|^\ufeff"


def sql_list(paths: Sequence[str]) -> str:
    """A DuckDB list of JSON paths."""
    return ", ".join(f"'{p}'" for p in paths)


def unescaped(leaf: str, alias: str) -> str:
    """A select item: the string value of a JSON leaf text that holds an escape (else null),
    as `alias`."""
    return (
        f"CASE WHEN strpos({leaf}, '\\') > 0 THEN json_extract_string({leaf}, '$') END AS {alias}"
    )


def string_leaf(leaf: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """A JSON leaf text as (is a string, its value); escapes were resolved by DuckDB into
    the `…_text` twin (see `unescaped`), so a plain string is its text less the quotes."""
    return leaf.str.starts_with('"'), leaf.str.slice(1).str.head(-1)


def string_value(leaf: pl.Expr, unescaped_text: pl.Expr, required: bool) -> tuple[pl.Expr, pl.Expr]:
    """A string leaf as (its row is plain, its value): a string, or (when not `required`)
    absent; its value from DuckDB's unescaped text where it has escapes."""
    is_string, value = string_leaf(leaf)
    ok = is_string if required else leaf.is_null() | is_string
    return ok, pl.when(unescaped_text.is_not_null()).then(unescaped_text).otherwise(value)


def string_items(items: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """A list of JSON item texts as (every item a string without escapes, their values)."""
    plain = items.list.eval(pl.element().str.contains(r'^"[^"\\]*"$').fill_null(False)).list.all()
    return plain.fill_null(True), items.list.eval(pl.element().str.slice(1).str.head(-1))


def list_attribute(leaf: pl.Expr, kind: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """A well-known list attribute (`kind`: its JSON type) as (its row is plain, its items):
    absent, null, or an array of plain strings."""
    plain, items = string_items(leaf)
    return kind.is_null() | (kind == "NULL") | ((kind == "ARRAY") & plain), items


def plain_extras(text: pl.Expr) -> pl.Expr:
    """Free-form attributes text as json.dumps writes it (see _PLAIN_EXTRAS)."""
    return text.str.contains(_PLAIN_EXTRAS) & ~text.str.contains(_FLOAT_TOKEN)


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


def sort_extras(parsed: pl.DataFrame) -> pl.DataFrame:
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


def _duckdb() -> Any:
    import duckdb

    return duckdb.connect()


def query(frame: pl.DataFrame, sql: str) -> pl.DataFrame:
    """A DuckDB query over `frame` (as `frame`), given in record batches so that DuckDB
    reads them on every core; rows come back in `__row` order."""
    import pyarrow as pa

    table = pa.Table.from_batches(frame.to_arrow().to_batches(max_chunksize=16_384))
    con = _duckdb()
    try:
        con.register("frame", table)
        return con.sql(sql).pl().sort(ROW)
    finally:
        con.close()
