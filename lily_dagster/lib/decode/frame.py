"""The whole: a frame of envelopes (nested, flattened or payloads) decoded into events and
rejects as decode_envelopes and the tenant rules would, and the `raw` a lazy decode left
out filled in for the rejects that need it."""

from __future__ import annotations

import polars as pl

from lily_dagster.lib.decode.json_lines import decode_payloads
from lily_dagster.lib.decode.partial import concat_partials
from lily_dagster.lib.decode.reference import parquet_payloads, reference
from lily_dagster.lib.decode.schema import ENVELOPE_FIELDS, ROW
from lily_dagster.lib.decode.structured import structured_parallel
from lily_dagster.lib.decode.tenant import origin_series, tenant_checks
from lily_dagster.lib.envelope import (
    DecodeResult,
    empty_events,
    empty_rejects,
    quarantine_id,
    to_rejects,
)


def decode_frame(
    frame: pl.DataFrame,
    tenant: str | None,
    origins: pl.Series | str,
    max_event_bytes: int,
    *,
    lazy_raw: bool = False,
) -> DecodeResult:
    """Decode a frame of envelopes (nested, flattened or payloads; see the package) into
    events and rejects, as decode_envelopes and the tenant rules would, in row order.

    `tenant` is the tenant the frame is for: events naming another are tenant_mismatch
    rejects, and every reject is filed under it (None: no binding, filed under none).
    `origins` gives each row's origin, or the first row's as `<where>#<n>` (the rows after
    it are `#<n+1>`, …); a payload frame's own `origin` column wins over a string.

    `lazy_raw`: an event decoded column-wise has no `raw` (null; rejects still get theirs).
    Building the JSON of every Parquet row cost ~0.6 s of CPU and a copy of the text per 1M
    rows, and keeping a payload's text keeps the whole batch's text, while a bulk load needs
    them only for the few rows a later gate refuses: `fill_raw` gives them theirs. Rows that
    might exceed `max_event_bytes` are measured exactly."""
    origin = _row_origins(frame, origins)
    if is_payloads(frame):
        partial = decode_payloads(frame.get_column("value"), origin, max_event_bytes, lazy_raw)
    else:
        partial, left = structured_parallel(frame, origin, max_event_bytes, lazy_raw)
        if left.height:
            slow = reference(
                parquet_payloads(left), left.get_column(ROW).to_list(), origin, max_event_bytes
            )
            partial = concat_partials([partial, slow])
    events, refused = tenant_checks(partial.events, tenant)
    if not events.get_column(ROW).is_sorted():
        events = events.sort(ROW)
    rejects = pl.concat([partial.rejects, refused]) if refused.height else partial.rejects
    if lazy_raw and rejects.get_column("raw").has_nulls():
        rows = rejects.filter(_lacks_raw()).get_column(ROW)
        rejects = _with_raw(rejects, _raw_by_origin(frame, origin, rows, max_event_bytes))
    events, rejects = events.drop(ROW), rejects.sort(ROW).drop(ROW)
    return DecodeResult(
        events=events if events.height else empty_events(),
        rejects=to_rejects(rejects, tenant) if rejects.height else empty_rejects(),
    )


def fill_raw(
    rejects: pl.DataFrame,
    frame: pl.DataFrame,
    origins: pl.Series | str,
    max_event_bytes: int,
) -> pl.DataFrame:
    """Rejects (REJECT_SCHEMA) of events decoded from `frame` with `lazy_raw`, with the raw
    (and the quarantine id made of it) of those that lack it, found by origin."""
    missing = rejects.select(_lacks_raw()).to_series()
    if not missing.any():
        return rejects
    origin = _row_origins(frame, origins)
    wanted = rejects.filter(missing).select("origin").unique()
    rows = (
        origin.to_frame().with_row_index(ROW).join(wanted, on="origin", how="semi").get_column(ROW)
    )
    filled = _with_raw(rejects, _raw_by_origin(frame, origin, rows, max_event_bytes))
    return filled.with_columns(
        pl.when(missing)
        .then(pl.col("raw").map_elements(quarantine_id, return_dtype=pl.String))
        .otherwise(pl.col("quarantine_id"))
        .alias("quarantine_id")
    )


def _row_origins(frame: pl.DataFrame, origins: pl.Series | str) -> pl.Series:
    """Each row's origin (see decode_frame): a payload frame's own wins over a string."""
    if is_payloads(frame) and "origin" in frame.columns and isinstance(origins, str):
        return frame.get_column("origin").cast(pl.String)
    return origin_series(origins, frame.height)


def _lacks_raw() -> pl.Expr:
    """Rejects whose payload a lazy decode left out (neither text nor bytes)."""
    return pl.col("raw").is_null() & pl.col("raw_bytes").is_null()


def _raw_by_origin(
    frame: pl.DataFrame, origin: pl.Series, rows: pl.Series, max_event_bytes: int
) -> pl.DataFrame:
    """origin → raw of the given rows, decoded again with their raw (they are few)."""
    again = decode_frame(frame[rows], None, origin[rows], max_event_bytes)
    return pl.concat(
        [again.events.select("origin", "raw"), again.rejects.select("origin", "raw")]
    ).unique("origin")


def _with_raw(rows: pl.DataFrame, raw: pl.DataFrame) -> pl.DataFrame:
    return (
        rows.join(raw.rename({"raw": "__raw"}), on="origin", how="left", maintain_order="left")
        .with_columns(pl.coalesce("raw", "__raw").alias("raw"))
        .drop("__raw")
    )


def is_payloads(frame: pl.DataFrame) -> bool:
    """Whether `frame` holds envelope JSON text (a `value` column), not envelope columns."""
    return (
        "value" in frame.columns
        and "asset" not in frame.columns
        and not any(c in frame.columns for c in ENVELOPE_FIELDS)
    )
