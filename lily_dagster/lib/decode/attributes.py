"""The asset's attributes in a nested or flattened frame: a struct (the common case), JSON
object text (read through DuckDB), or something else (wrong_type, or the reference's to
read). Gives their checks, their member of `raw`, the free-form ones as the event's
`attributes` text, and the rows the reference decodes."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from lily_dagster.lib.decode.checks import Check, list_checks, optional_string_checks
from lily_dagster.lib.decode.dtypes import flat
from lily_dagster.lib.decode.facts import UNKNOWN, Field
from lily_dagster.lib.decode.json_attributes import json_attributes
from lily_dagster.lib.decode.json_text import (
    Member,
    concat,
    encode,
    key,
    member,
    object_parts,
    sorted_keys,
)
from lily_dagster.lib.decode.layout import unsafe_rows
from lily_dagster.lib.decode.schema import (
    DECLARED_ATTRIBUTES,
    LIST_ATTRIBUTES,
    NON_ASCII,
    NOT_OBJECT,
)
from lily_dagster.lib.envelope import WELL_KNOWN_ATTRIBUTES
from lily_dagster.lib.reasons import Reason


@dataclass
class Attributes:
    checks: list[Check] = field(default_factory=list)
    fields: dict[str, Field] = field(default_factory=dict)  # the well-known (and others)
    member: Member | None = None  # the attributes object in raw
    json_ascii: pl.Expr | None = None  # rows whose JSON text attributes hold non-ASCII
    extras: pl.Expr = field(default_factory=lambda: pl.lit("{}"))  # the free-form ones
    fallback: list[pl.Expr] = field(default_factory=list)  # rows left to the reference


def attributes(attr: Field | None, fields: dict[str, Field]) -> Attributes:
    """The attributes of a frame whose asset holds `attr` (`fields`: every leaf)."""
    if attr is not None and isinstance(attr.dtype, pl.Struct):
        return _struct(attr, attr.dtype, fields)
    if attr is None or attr.dtype == pl.Null:
        return Attributes()
    if attr.native and attr.dtype != pl.String:
        return _not_an_object(attr)
    if attr.dtype == pl.String and attr.series is not None:
        return _json_text(attr, attr.series)
    return Attributes(fallback=[attr.expr.is_not_null()])  # a map: the reference reads it


def _struct(attr: Field, dtype: pl.Struct, fields: dict[str, Field]) -> Attributes:
    """A struct: its fields are leaves of their own (`attr.<name>`)."""
    attr_fields = {f.name: fields[f"attr.{f.name}"] for f in dtype.fields}
    fallback = [rows for f in attr_fields.values() for rows in unsafe_rows(f)]
    if "lily_patch" in attr_fields and attr_fields["lily_patch"].dtype != pl.Null:
        fallback.append(attr_fields["lily_patch"].expr.is_not_null())
    natives = {n: f for n, f in attr_fields.items() if f.native}
    members = {n: member(n, f) for n, f in natives.items()}
    raw_attributes = object_parts(list(members.values()))
    extras = concat(object_parts(_extra_members(natives, members)))
    if attr.facts.nulls:
        present = attr.expr.is_not_null()
        raw = Member([key("attributes"), pl.when(present).then(concat(raw_attributes))], True)
        extras = pl.when(present).then(extras).otherwise(pl.lit("{}"))
    else:
        raw = Member([key("attributes"), *raw_attributes], False)
    return Attributes(_declared_checks(attr_fields), attr_fields, raw, None, extras, fallback)


def _declared_checks(attr_fields: dict[str, Field]) -> list[Check]:
    """The well-known attributes' checks, in declaration order."""
    checks: list[Check] = []
    for name in WELL_KNOWN_ATTRIBUTES:
        loc = f"asset.attributes.{name}"
        if name in LIST_ATTRIBUTES:
            checks += list_checks(attr_fields.get(name), loc)
        else:
            checks += optional_string_checks(attr_fields.get(name), loc)
    return checks


def _extra_members(natives: dict[str, Field], members: dict[str, Member]) -> list[Member]:
    """The free-form attributes' members in key order, nested objects with sorted keys."""
    extras = []
    for n in sorted(natives):
        if n in DECLARED_ATTRIBUTES:
            continue
        extra = natives[n]
        if flat(extra.dtype):
            extras.append(members[n])
        else:
            nested_value = encode(sorted_keys(extra.expr, extra.dtype))
            extras.append(Member([key(n), nested_value], extra.facts.nulls))
    return extras


def _not_an_object(attr: Field) -> Attributes:
    """A native value that is not an object: wrong_type, its raw written as it is."""
    check = Check(attr.expr.is_not_null(), Reason.WRONG_TYPE, f"asset.attributes: {NOT_OBJECT}")
    # a float written in raw must print as Python prints it
    return Attributes([check], member=member("attributes", attr), fallback=unsafe_rows(attr))


def _json_text(attr: Field, texts: pl.Series) -> Attributes:
    """JSON object text: the plain rows read here through DuckDB, the rest by the reference."""
    read = json_attributes(texts)
    fast = pl.lit(read.get_column("fast"))
    attr_fields = {}
    for n in WELL_KNOWN_ATTRIBUTES:
        column = read.get_column(n)
        attr_fields[n] = Field(pl.lit(column), column.dtype, UNKNOWN, True, column)
    obj = read.get_column("object")
    return Attributes(
        fields=attr_fields,
        member=Member([key("attributes"), pl.lit(obj)], True),
        json_ascii=pl.lit(obj.str.contains(NON_ASCII).fill_null(False)),
        extras=pl.lit(read.get_column("extras")).fill_null(pl.lit("{}")),
        fallback=[attr.expr.is_not_null() & ~fast.fill_null(False)],
    )
