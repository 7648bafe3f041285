"""The names the decoder works with: envelope fields, working columns, shared literals, the
reject columns, and pydantic's words for what is wrong."""

from __future__ import annotations

import polars as pl

from lily_dagster.lib.envelope import EVENT_SCHEMA, WELL_KNOWN_ATTRIBUTES

ENVELOPE_FIELDS = ("event_id", "tenant", "source", "op", "event_time")
STRING_ASSET_FIELDS = ("type_name", "qualified_name", "name")
LIST_ASSET_FIELDS = ("classifications", "inputs", "outputs")
DECLARED_ATTRIBUTES = (*WELL_KNOWN_ATTRIBUTES, "lily_patch")
LIST_ATTRIBUTES = tuple(a for a in WELL_KNOWN_ATTRIBUTES if EVENT_SCHEMA[a] == pl.List(pl.String))
STRING_ATTRIBUTES = tuple(a for a in WELL_KNOWN_ATTRIBUTES if a not in LIST_ATTRIBUTES)
TENANT_RULES = ("tenant_format", "tenant_binding")
OPS = ("upsert", "delete")

ROW = "__row"  # the row's number in the frame being decoded
TRUE = pl.lit(True)
NULL_STR = pl.lit(None, dtype=pl.String)
NULL_BYTES = pl.lit(None, dtype=pl.Binary)
NON_ASCII = r"[^\x00-\x7e]"  # a character json.dumps escapes (ensure_ascii), DEL included

# The reference's regex of an event_time.
EVENT_TIME = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
TIME_TEXT = "\x00event_time\x00"  # a detail still to be worded (see rejects.time_detail)

MISSING = "Field required"
NOT_STRING = "Input should be a valid string"
NOT_ARRAY = "Input should be a valid array"
NOT_OBJECT = "Input should be an object"
NOT_OP = "Input should be 'upsert' or 'delete'"
NOT_TIME = "Value error, expected RFC 3339 date-time with a time zone, e.g. 2026-11-23T10:00:00Z"

REJECT_FIELDS = {
    "event_id": pl.String(),
    "reason": pl.String(),
    "detail": pl.String(),
    "raw": pl.String(),
    "raw_bytes": pl.Binary(),  # a payload that is not UTF-8, byte for byte
    "origin": pl.String(),
}
REJECT_COLUMNS = {**REJECT_FIELDS, ROW: pl.UInt32()}
