"""JSON text as Python's json.dumps writes it, built column-wise.

Text is built as parts (literal strings and expressions) that one concat_str joins: polars
pays per input of a concatenation, so literals are merged and values quoted in place.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from lily_dagster.lib.decode.dtypes import INTS, DType, flat
from lily_dagster.lib.decode.facts import Facts, Field
from lily_dagster.lib.decode.schema import NON_ASCII

Part = str | pl.Expr

SPARSE_SHARE = 0.3  # a member present in at most this share of rows is built for those only
SPARSE_MIN_ROWS = 10_000

_NON_ASCII = re.compile(NON_ASCII)


@dataclass(frozen=True)
class Member:
    parts: list[Part]  # `"key":value`
    nullable: bool  # absent in the rows where it is null


def concat(parts: Sequence[Part]) -> pl.Expr:
    """One expression of the parts, null when any expression part is null."""
    merged: list[Part] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    exprs = [pl.lit(p) if isinstance(p, str) else p for p in merged]
    return exprs[0] if len(exprs) == 1 else pl.format("{}" * len(exprs), *exprs)


def key(name: str) -> str:
    """A member name and its colon, escaped as json.dumps escapes it."""
    return json.dumps(name) + ":"


def encode(expr: pl.Expr) -> pl.Expr:
    """One value as JSON text through json_encode; null stays null (an absent member)."""
    encoded = pl.struct(expr.alias("v")).struct.json_encode()
    return pl.when(expr.is_not_null()).then(encoded.str.slice(5).str.head(-1))


def value_parts(expr: pl.Expr, dtype: DType, facts: Facts) -> list[Part]:
    """A native value as JSON text parts (null where the value is null)."""
    if dtype == pl.String:
        if facts.control:
            return [encode(expr)]
        if facts.escape:
            expr = expr.str.replace_many(["\\", '"'], ["\\\\", '\\"'])
        return ['"', expr, '"']
    if dtype == pl.Boolean or isinstance(dtype, INTS):
        return [expr.cast(pl.String)]
    if isinstance(dtype, pl.List) and dtype.inner == pl.String:
        if facts.escape or facts.item_nulls:
            return [encode(expr)]
        if not facts.empty:
            return ['["', expr.list.join('","'), '"]']
        items = pl.concat_str([pl.lit('["'), expr.list.join('","'), pl.lit('"]')])
        return [pl.when(expr.list.len() == 0).then(pl.lit("[]")).otherwise(items)]
    return [encode(expr)]


def member(name: str, field: Field) -> Member:
    """`"name":value` of a native field, absent where it is null. A mostly-null field's text
    is built for its present rows only and put back in place: polars pays per row, null or
    not, for list joins and concatenations."""
    facts, series = field.facts, field.series
    if facts.all_null:
        return Member([], True)
    parts = [key(name), *value_parts(field.expr, field.dtype, facts)]
    if not facts.nulls or series is None or series.len() < SPARSE_MIN_ROWS:
        return Member(parts, facts.nulls)
    present = series.len() - series.null_count()
    if present > SPARSE_SHARE * series.len():
        return Member(parts, True)
    rows = series.is_not_null().arg_true()
    values = series.gather(rows).alias("__v")
    text = concat([key(name), *value_parts(pl.col("__v"), field.dtype, facts)])
    built = values.to_frame().select(text).to_series()
    full = pl.repeat(None, series.len(), dtype=pl.String, eager=True).scatter(rows, built)
    return Member([pl.lit(full)], True)


def object_parts(members: Sequence[Member]) -> list[Part]:
    """`{…}` of the members, the null ones left out: members that are never null are joined
    in place; with some that may be, the segments are joined skipping nulls."""
    members = [m for m in members if m.parts]  # never present
    if not members:
        return ["{}"]
    if not any(m.nullable for m in members):
        parts: list[Part] = ["{"]
        for i, m in enumerate(members):
            parts += ([","] if i else []) + m.parts
        return [*parts, "}"]
    segments: list[pl.Expr] = []
    run: list[Part] = []
    for m in members:
        if m.nullable:
            if run:
                segments.append(concat(run))
                run = []
            segments.append(concat(m.parts))
        else:
            run += ([","] if run else []) + m.parts
    if run:
        segments.append(concat(run))
    inner = pl.concat_str(segments, separator=",", ignore_nulls=True)
    return ["{", inner, "}"]


def sorted_keys(expr: pl.Expr, dtype: DType) -> pl.Expr:
    """The value with every object's keys in sorted order (json.dumps(sort_keys=True))."""
    if isinstance(dtype, pl.Struct):
        fields = sorted(dtype.fields, key=lambda f: f.name)
        rebuilt = pl.struct(
            [sorted_keys(expr.struct.field(f.name), f.dtype).alias(f.name) for f in fields]
        )
        return pl.when(expr.is_not_null()).then(rebuilt)
    if isinstance(dtype, pl.List) and not flat(dtype.inner):
        return expr.list.eval(sorted_keys(pl.element(), dtype.inner))
    return expr


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 | (code >> 10):04x}\\u{0xDC00 | (code & 0x3FF):04x}"


def ensure_ascii(texts: pl.Series, needs: pl.Series | None = None) -> pl.Series:
    """JSON text with every non-ASCII character (and DEL) escaped, as ensure_ascii does.
    Only the rows that need it (`needs`, or those found here) reach Python, joined into one
    string (JSON text has no raw newline) for one regex pass."""
    if needs is None:
        needs = texts.str.contains(NON_ASCII)
    needs = needs.fill_null(False)
    if not needs.any():
        return texts
    index = needs.arg_true()
    escaped = _NON_ASCII.sub(_escape_char, "\n".join(texts.gather(index).to_list())).split("\n")
    return texts.scatter(index, escaped)
