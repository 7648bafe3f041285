"""Pre-ingest enrichment on events frames. The hook framework (issue 4) builds on these."""

from __future__ import annotations

import polars as pl


def _normalise_principals(col: str) -> pl.Expr:
    # Source systems spell the same Atlan user as " JDoe", "jdoe"; Atlan usernames are
    # lower case. Keep null (attribute absent) apart from [] (explicitly no owners).
    return (
        pl.col(col)
        .list.eval(pl.element().str.strip_chars().str.to_lowercase())
        .list.eval(pl.element().filter(pl.element().str.len_chars() > 0))
        .list.unique()
        .list.sort()
        .alias(col)
    )


def normalise_owners(events: pl.DataFrame) -> pl.DataFrame:
    """Owner users and groups trimmed, lower-cased, de-duplicated and sorted."""
    return events.with_columns(
        _normalise_principals("owner_users"), _normalise_principals("owner_groups")
    )
