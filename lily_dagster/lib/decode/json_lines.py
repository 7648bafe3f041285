"""Payload frames (envelope JSON text, one a row: JSON Lines, landed Kafka messages) decoded
through one DuckDB query: the rows it shows to be valid, plain envelopes are decoded
column-wise; every other row (all invalid ones among them) is left to the reference, so a
reject has the reference's own reason and detail."""

from __future__ import annotations

import json
from typing import cast

import polars as pl

from lily_dagster.lib.decode.duckdb_json import (
    ATTRIBUTE_LEAVES,
    IN_ORDER,
    ODD_JSON,
    UNDECLARE,
    list_attribute,
    plain_extras,
    query,
    sort_extras,
    sql_list,
    string_items,
    string_value,
    unescaped,
)
from lily_dagster.lib.decode.event_time import event_times, year_guard
from lily_dagster.lib.decode.json_text import ensure_ascii
from lily_dagster.lib.decode.partial import Partial, concat_partials, no_events, no_rejects, no_rows
from lily_dagster.lib.decode.reference import reference
from lily_dagster.lib.decode.schema import (
    ENVELOPE_FIELDS,
    LIST_ASSET_FIELDS,
    LIST_ATTRIBUTES,
    OPS,
    ROW,
    STRING_ASSET_FIELDS,
    STRING_ATTRIBUTES,
)
from lily_dagster.lib.envelope import EVENT_SCHEMA, WELL_KNOWN_ATTRIBUTES

# Where JSON null and absence differ (null is refused, absence defaults) and the root.
_TYPE_PATHS = [
    "$",
    "$.asset",
    "$.asset.attributes",
    *[f"$.asset.{n}" for n in LIST_ASSET_FIELDS],
    *[f"$.asset.attributes.{n}" for n in LIST_ATTRIBUTES],
]
_KEY_PATHS = ["$", "$.asset", "$.asset.attributes"]
_ENVELOPE_LEAVES = json.dumps(
    {
        **dict.fromkeys(ENVELOPE_FIELDS, "JSON"),
        "asset": {
            **dict.fromkeys(STRING_ASSET_FIELDS, "JSON"),
            "attributes": "JSON",
            **{n: ["JSON"] for n in LIST_ASSET_FIELDS},
        },
    }
)
# String leaves whose escapes DuckDB resolves, each as `<path with _>_text`.
_STRING_LEAVES = [
    *[f"e.{n}" for n in ENVELOPE_FIELDS],
    *[f"e.asset.{n}" for n in STRING_ASSET_FIELDS],
    *[f"a.{n}" for n in STRING_ATTRIBUTES],
]
_SQL = f"""
    WITH typed AS (
        SELECT {ROW}, v, try(json_type(v, [{sql_list(_TYPE_PATHS)}])) AS t FROM frame
    ), parsed AS (
        SELECT {ROW}, t,
            CASE WHEN t[1] = 'OBJECT' THEN json_keys(v, [{sql_list(_KEY_PATHS)}]) END AS keys,
            CASE WHEN t[1] = 'OBJECT' THEN from_json(v, '{_ENVELOPE_LEAVES}') END AS e
        FROM typed
    ), nested AS (
        SELECT *,
            CASE WHEN t[3] = 'OBJECT'
                THEN from_json(e.asset.attributes, '{ATTRIBUTE_LEAVES}') END AS a,
            CASE WHEN t[3] = 'OBJECT'
                THEN json_merge_patch(e.asset.attributes, '{UNDECLARE}') END AS extras
        FROM parsed
    )
    SELECT {ROW}, t, keys, e, a, extras, {IN_ORDER},
        {", ".join(unescaped(x, f'"{x.replace(".", "_")}_text"') for x in _STRING_LEAVES)}
    FROM nested
"""


def as_text(values: pl.Series) -> pl.Series:
    """Payloads as text; those that are not UTF-8 become null (the reference words them)."""
    if values.dtype != pl.Binary:
        return values.cast(pl.String)
    try:
        return values.cast(pl.String)
    except pl.exceptions.PolarsError:
        decoded = []
        for v in values.to_list():
            try:
                decoded.append(None if v is None else v.decode("utf-8"))
            except UnicodeDecodeError:
                decoded.append(None)
        return pl.Series(decoded, dtype=pl.String)


def decode_payloads(payloads: pl.Series, origins: pl.Series, max_event_bytes: int) -> Partial:
    """Envelope JSON text, one a row (String or Binary): the plain valid envelopes decoded
    column-wise, the rest by the reference."""
    text = as_text(payloads)
    rows = pl.int_range(payloads.len(), dtype=pl.UInt32, eager=True).alias(ROW)
    frame = pl.DataFrame([rows, text.alias("v")])
    if not frame.height:
        return Partial(no_events(), no_rejects(), no_rows())
    parsed = query(frame, _SQL).with_columns(text.alias("raw"), origins.alias("origin"))
    values, ok = _values(max_event_bytes)
    parsed = sort_extras(parsed)
    times = event_times(parsed.select(values["event_time"]).to_series())
    parsed = parsed.with_columns(times.alias("__time"))
    ok += [pl.col("__time").is_not_null(), ~year_guard(values["event_time"])]
    work = parsed.with_columns(pl.all_horizontal([c.fill_null(False) for c in ok]).alias("__fast"))
    slow = work.filter(~pl.col("__fast")).get_column(ROW)
    fast = _events(work.filter(pl.col("__fast")), values)
    partial = Partial(fast, no_rejects(), no_rows())
    if slow.len():
        picked = cast(list[bytes | str], payloads.gather(slow).to_list())
        partial = concat_partials(
            [partial, reference(picked, slow.to_list(), origins, max_event_bytes)]
        )
    return partial


def _values(max_event_bytes: int) -> tuple[dict[str, pl.Expr], list[pl.Expr]]:
    """The event's values from the query's columns, and what a row must be for them to be
    its values (event_time aside: its reading is eager)."""
    t = pl.col("t")
    e, a = pl.col("e"), pl.col("a")
    asset = e.struct.field("asset")
    ok = _shape(max_event_bytes)
    values: dict[str, pl.Expr] = {}
    strings = [
        *[(n, e.struct.field(n), f"e_{n}", True) for n in ENVELOPE_FIELDS],
        *[(n, asset.struct.field(n), f"e_asset_{n}", True) for n in STRING_ASSET_FIELDS],
        *[(n, a.struct.field(n), f"a_{n}", False) for n in STRING_ATTRIBUTES],
    ]
    for n, leaf, name, required in strings:
        plain, values[n] = string_value(leaf, pl.col(f"{name}_text"), required)
        ok.append(plain)
    ok.append(values["op"].is_in(OPS))
    ok.append(a.struct.field("lily_patch").is_null())  # a patch is the reference's to read
    for i, n in enumerate(LIST_ASSET_FIELDS, start=3):
        plain, items = string_items(asset.struct.field(n))
        ok.append(t.list.get(i).is_null() | ((t.list.get(i) == "ARRAY") & plain))
        values[n] = items.fill_null(pl.lit([], dtype=pl.List(pl.String)))
    for i, n in enumerate(LIST_ATTRIBUTES, start=3 + len(LIST_ASSET_FIELDS)):
        plain, values[n] = list_attribute(a.struct.field(n), t.list.get(i))
        ok.append(plain)
    extras = pl.col("extras")
    ok += [extras.is_null() | plain_extras(extras), pl.col("in_order").fill_null(True)]
    return values, ok


def _shape(max_event_bytes: int) -> list[pl.Expr]:
    """An object with an asset object (and attributes absent or an object), no token the two
    parsers may read differently, within the size limit, no key twice."""
    t = pl.col("t")
    return [
        t.list.get(0) == "OBJECT",
        t.list.get(1) == "OBJECT",
        t.list.get(2).is_null() | (t.list.get(2) == "OBJECT"),  # absent, or an object
        ~pl.col("raw").str.contains(ODD_JSON),
        pl.col("raw").str.len_bytes() <= max_event_bytes,
        pl.col("keys")
        .list.eval(pl.element().list.len() == pl.element().list.n_unique())
        .list.all(),  # no key twice (DuckDB reads the first, Python the last)
    ]


def _events(fast: pl.DataFrame, values: dict[str, pl.Expr]) -> pl.DataFrame:
    """The plain rows as events (EVENT_SCHEMA + __row), free-form attributes ASCII-escaped."""
    events = fast.select(
        *[values[n].alias(n) for n in ("event_id", "tenant", "source", "op")],
        pl.col("__time").alias("event_time"),
        *[values[n].alias(n) for n in STRING_ASSET_FIELDS],
        *[values[n].alias(n) for n in WELL_KNOWN_ATTRIBUTES],
        pl.col("extras").fill_null(pl.lit("{}")).alias("attributes"),
        *[values[n].alias(n) for n in LIST_ASSET_FIELDS],
        pl.lit(None, dtype=pl.String).alias("patch"),
        "raw",
        "origin",
        ROW,
    )
    events = events.with_columns(ensure_ascii(events.get_column("attributes")).alias("attributes"))
    schema = {**EVENT_SCHEMA, ROW: pl.UInt32()}
    return events.cast(schema)  # type: ignore[arg-type]
