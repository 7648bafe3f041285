"""A decoding path's share of the result (events and rejects with their row numbers, and the
rows it leaves to the reference), its empty forms, and how shares are joined."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from lily_dagster.lib.decode.schema import REJECT_COLUMNS, ROW
from lily_dagster.lib.envelope import empty_events


@dataclass
class Partial:
    """One path's share: events and rejects with their row numbers, and the rows it leaves
    to the reference decoder."""

    events: pl.DataFrame  # EVENT_SCHEMA + __row
    rejects: pl.DataFrame  # event_id, reason, detail, raw, origin, __row
    fallback: pl.Series  # row numbers (UInt32)


def no_rows() -> pl.Series:
    return pl.Series(ROW, [], dtype=pl.UInt32)


def no_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECT_COLUMNS)


def no_events() -> pl.DataFrame:
    return empty_events().with_columns(pl.lit(None, dtype=pl.UInt32).alias(ROW)).clear()


def concat_partials(parts: Sequence[Partial]) -> Partial:
    events = [p.events for p in parts if p.events.height]
    rejects = [p.rejects for p in parts if p.rejects.height]
    return Partial(
        pl.concat(events) if events else no_events(),
        pl.concat(rejects) if rejects else no_rejects(),
        no_rows(),
    )
