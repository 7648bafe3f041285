"""The reference decoder (decode_envelopes, row by row) for the rows the column-wise paths
leave, with their row numbers and origins kept."""

from __future__ import annotations

import json
from collections.abc import Sequence

import polars as pl

from lily_dagster.lib.decode.partial import Partial, concat_partials, no_rows
from lily_dagster.lib.decode.schema import REJECT_COLUMNS, REJECT_FIELDS, ROW
from lily_dagster.lib.envelope import EVENT_SCHEMA, DecodeResult, decode_envelopes, empty_events
from lily_dagster.lib.inventory import _json_value, parquet_envelope
from lily_dagster.lib.reasons import Reason


def reference(
    payloads: Sequence[bytes | str], rows: Sequence[int], origins: pl.Series, max_event_bytes: int
) -> Partial:
    """decode_envelopes on the given payloads, row numbers kept. A payload the reference
    cannot convert at all (a time whose UTC value leaves the calendar) is a bad_event_time."""
    keys = [str(r) for r in rows]
    try:
        decoded = decode_envelopes(payloads, keys, tenant=None, max_event_bytes=max_event_bytes)
    except (OverflowError, ValueError):
        if len(payloads) > 1:
            return concat_partials(
                [
                    reference([p], [r], origins, max_event_bytes)
                    for p, r in zip(payloads, rows, strict=True)
                ]
            )
        decoded = _unrepresentable(payloads[0], keys[0])
    row = pl.col("origin").cast(pl.UInt32).alias(ROW)
    events = decoded.events.with_columns(row)
    rejects = decoded.rejects.select(*REJECT_FIELDS).with_columns(row)
    events = events.with_columns(origins.gather(events.get_column(ROW)).alias("origin"))
    rejects = rejects.with_columns(origins.gather(rejects.get_column(ROW)).alias("origin"))
    return Partial(
        events.select(*EVENT_SCHEMA, ROW),
        rejects.cast(REJECT_COLUMNS),  # type: ignore[arg-type]
        no_rows(),
    )


def _unrepresentable(payload: bytes | str, key: str) -> DecodeResult:
    """The bad_event_time reject of a payload whose time leaves the calendar in UTC."""
    text = payload if isinstance(payload, str) else payload.decode("utf-8", "replace")
    detail = "event_time: not representable in UTC"
    rejected = pl.DataFrame(
        [[None, Reason.BAD_EVENT_TIME.value, detail, text, None, key]],
        schema=REJECT_FIELDS,
        orient="row",
    )
    return DecodeResult(empty_events(), rejected)


def parquet_payloads(rows: pl.DataFrame) -> list[bytes | str]:
    """The envelope JSON the row-by-row snapshot reader makes of each row."""
    return [
        json.dumps(parquet_envelope(r), separators=(",", ":"), default=_json_value)
        for r in rows.drop(ROW).iter_rows(named=True)
    ]
