"""JSON text read by DuckDB's JSON functions (yyjson) on every core, two passes a batch: the
key lists of each object (`keys_sql`), then the leaves as JSON text (`leaves_sql`) under a
structure made for the batch (its free-form attribute keys among them).

Leaves come as their JSON text, so a string is told from a number; key lists show a key given
twice (DuckDB reads the first, Python the last) and null given where absence is meant. yyjson
reads more than JSON, though: NaN and infinity tokens (any case) and trailing commas, which
Python refuses; rows that may hold those are found by `lenient` and left to the reference.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import polars as pl

from lily_dagster.lib.decode.schema import DECLARED_ATTRIBUTES, ROW

# What yyjson reads and Python does not (a NaN or infinity token, a trailing comma); a
# string holding such text is sent along too (rare, and the reference is exact).
_CONSTANT_TOKEN = r"[:,\[][ \t\r\n]*[+-]?(?i:nan|inf)"
_TRAILING_COMMA = r",[ \t\r\n]*[}\]]"


def lenient(text: pl.Expr) -> pl.Expr:
    """JSON text yyjson may read where Python refuses it (see the module)."""
    return text.str.contains(_CONSTANT_TOKEN) | text.str.contains(_TRAILING_COMMA)


def sql_string(text: str) -> str:
    """A DuckDB string literal."""
    return "'" + text.replace("'", "''") + "'"


def keys_sql(paths: Sequence[str], attributes: int, also: str = "") -> str:
    """A query of `frame` (`__row`, JSON text `v`): each object's key list at `paths` (as
    `keys_<i>`), how many keys of the one at `paths[attributes]` are free-form attributes
    (`extra_count`), and the select items `also` (of `v`)."""
    declared = ", ".join(sql_string(n) for n in DECLARED_ATTRIBUTES)
    lists = ", ".join(f"k[{i + 1}] AS keys_{i}" for i in range(len(paths)))
    return f"""
        SELECT {ROW}, {lists},
            coalesce(len(list_filter(k[{attributes + 1}], lambda x: x NOT IN ({declared}))), 0)
                AS extra_count{also}
        FROM (
            SELECT {ROW}, v, try(json_keys(v, [{", ".join(sql_string(p) for p in paths)}])) AS k
            FROM frame
        )
    """


def leaves_sql(structure: dict[str, Any], strings: Sequence[str]) -> str:
    """A query of `frame`: each text's leaves under `structure` (JSON text per leaf, as
    `e`), and the string value of each of the `strings` leaves (paths under `e`) that holds
    an escape, as `<path with _>_text` (else null; only texts with a backslash are looked
    at)."""
    twins = "".join(f", {_unescaped(leaf)}" for leaf in strings)
    return f"""
        SELECT {ROW}, e{twins}
        FROM (
            SELECT {ROW}, strpos(v, '\\') > 0 AS escaped,
                try(from_json(v, {sql_string(json.dumps(structure))})) AS e
            FROM frame
        )
    """


def _unescaped(leaf: str) -> str:
    path = "e." + leaf
    alias = f'"{leaf.replace(".", "_")}_text"'
    value = f"json_extract_string({path}, '$')"
    return f"CASE WHEN escaped AND strpos({path}, '\\') > 0 THEN {value} END AS {alias}"


@contextmanager
def registered(frame: pl.DataFrame) -> Iterator[Callable[[str], pl.DataFrame]]:
    """Queries over `frame` (as `frame`), given to DuckDB in record batches so that it reads
    them on every core; each query's rows come back in `__row` order (DuckDB keeps the
    order it read them in: the sort is a safeguard that costs a look)."""
    import duckdb
    import pyarrow as pa

    arrow = frame.to_arrow(compat_level=pl.CompatLevel.newest())  # string views: no copy
    table = pa.Table.from_batches(arrow.to_batches(max_chunksize=16_384), schema=arrow.schema)
    con = duckdb.connect()

    def run(sql: str) -> pl.DataFrame:
        result = pl.from_arrow(con.sql(sql).to_arrow_table())
        assert isinstance(result, pl.DataFrame)
        return result if result.get_column(ROW).is_sorted() else result.sort(ROW)

    try:
        con.register("frame", table)
        yield run
    finally:
        con.close()
