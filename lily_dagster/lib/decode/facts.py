"""What a column holds, found once per frame so that each column gets the cheapest exact path:
nulls, the bytes of its text, constant strings, empty lists, unsafe floats, timestamp ranges."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import cast

import polars as pl

from lily_dagster.lib.decode.dtypes import DType, float_guard, has_text, native


@dataclass(frozen=True)
class Facts:
    nulls: bool = True  # some value is null
    escape: bool = True  # strings (or list items): a quote, backslash or control character
    control: bool = True  # strings (or list items): a control character
    ascii: bool = False  # strings (or list items): every byte below 0x7f
    item_nulls: bool = True  # lists: some item is null
    constant: str | None = None  # strings without nulls: the one value, when there is one
    empty: bool = True  # lists: some list is empty
    all_null: bool = False  # every value is null
    unsafe_floats: bool = True  # floats: some value Python prints otherwise than polars
    low: int | None = None  # timestamps: the earliest, in microseconds since the epoch
    high: int | None = None  # … the latest
    years: tuple[int, int] | None = None  # … and their years


UNKNOWN = Facts()


@dataclass(frozen=True)
class Leaf:
    """A value of the envelope: how to select it, and its values in this frame."""

    expr: pl.Expr
    series: pl.Series
    constant: bool = False  # look for a value shared by every row

    @property
    def dtype(self) -> DType:
        return self.series.dtype


@dataclass(frozen=True)
class Field:
    """A leaf with what it holds; `native`: written here as json.dumps writes it."""

    expr: pl.Expr
    dtype: DType
    facts: Facts
    native: bool
    series: pl.Series | None = None


def fields(leaves: dict[str, Leaf]) -> dict[str, Field]:
    """The leaves as fields, with the facts of the native ones."""
    out = {}
    for k, leaf in leaves.items():
        is_native = native(leaf.dtype)
        timestamp = isinstance(leaf.dtype, (pl.Datetime, pl.Date))
        facts = leaf_facts(leaf) if is_native or timestamp else UNKNOWN
        out[k] = Field(leaf.expr, leaf.dtype, facts, is_native, leaf.series)
    return out


def _text_bytes(text: pl.Series) -> tuple[bool, bool, bool]:
    """(escape, control, ascii) of a string column: its bytes seen as one UInt8 column."""
    if text.null_count():
        text = text.drop_nulls()  # explode has a slow path for nulls
    data = text.cast(pl.Binary).cast(pl.List(pl.UInt8)).explode()
    if not data.len() or data.null_count() == data.len():
        return False, False, True
    low, high = cast(int, data.min()), cast(int, data.max())
    control = low < 0x20
    escape = control or bool(((data == 0x22) | (data == 0x5C)).any())
    return escape, control, high < 0x7F


def leaf_facts(leaf: Leaf) -> Facts:
    """What a native leaf holds: nulls, the bytes of its text (or list items), empty lists,
    null items, a constant string, unsafe floats, the range of timestamps."""
    series, dtype = leaf.series, leaf.dtype
    nulls = series.null_count()
    if nulls == series.len():
        return Facts(nulls > 0, False, False, True, False, None, False, True, False)
    facts = Facts(nulls=nulls > 0, ascii=not has_text(dtype))
    if dtype == pl.String:
        return _string_facts(leaf, facts)
    if isinstance(dtype, pl.List) and dtype.inner == pl.String:
        items = series.explode(keep_nulls=False)
        escape, control, ascii_only = _text_bytes(items)
        return replace(
            facts, escape=escape, control=control, ascii=ascii_only,
            item_nulls=items.null_count() > 0, empty=series.list.len().min() == 0,
        )  # fmt: skip
    if dtype == pl.Float64:
        unsafe = pl.select(float_guard(pl.lit(series)).any()).item()
        return replace(facts, unsafe_floats=bool(unsafe))
    if isinstance(dtype, pl.Datetime):
        return _timestamp_facts(series, facts)
    return facts


def _string_facts(leaf: Leaf, facts: Facts) -> Facts:
    """A string leaf's facts: a constant, or the bytes of its text."""
    series = leaf.series
    constant = leaf.constant and not facts.nulls and series[0] == series[-1]
    if constant and series.min() == series.max():
        # one value: written as a literal by json.dumps, its bytes need no look
        return replace(facts, escape=False, control=False, ascii=True, item_nulls=False,
                       constant=cast(str, series[0]), empty=False)  # fmt: skip
    escape, control, ascii_only = _text_bytes(series)
    return replace(
        facts, escape=escape, control=control, ascii=ascii_only, item_nulls=False,
        constant=None, empty=False,
    )  # fmt: skip


def _timestamp_facts(series: pl.Series, facts: Facts) -> Facts:
    """A timestamp leaf's range, in microseconds and in years."""
    micros = series.dt.epoch("us")
    low, high = cast(int, micros.min()), cast(int, micros.max())
    epoch = datetime(1970, 1, 1)
    years = (
        (epoch + timedelta(microseconds=low)).year,
        (epoch + timedelta(microseconds=high)).year,
    )
    return replace(facts, low=low, high=high, years=years)
