"""Pre-ingest enrichment on events frames. The hook framework (issue 4) builds on these."""

from __future__ import annotations

import polars as pl


def _normalise_principals(col: str) -> pl.Expr:
    # Source systems spell the same Atlan user as " JDoe", "jdoe"; Atlan usernames are
    # lower case. Keep null (attribute absent) apart from [] (explicitly no owners).
    # The list namespace's own sort is far slower on strings than sorting inside eval.
    name = pl.element().str.strip_chars().str.to_lowercase()
    return (
        pl.col(col)
        .list.eval(name.filter(name != ""))
        .list.unique()
        .list.eval(pl.element().sort())
        .alias(col)
    )


def normalise_owners(events: pl.DataFrame) -> pl.DataFrame:
    """Owner users and groups trimmed, lower-cased, de-duplicated and sorted."""
    return events.with_columns(
        _normalise_principals("owner_users"), _normalise_principals("owner_groups")
    )


def with_added_tags(
    events: pl.DataFrame, column: str, additions: list[tuple[pl.Expr, list[str]]]
) -> pl.DataFrame:
    """`column` (a list of strings) plus each addition's tags on the rows where its
    condition holds, without duplicates, in order; rows no condition holds stay as they were
    (null included). The conditions are computed once, and only the rows that gain a tag
    are rebuilt; row order is kept."""
    if not additions:
        return events
    flags = [f"__tag_{i}" for i in range(len(additions))]
    flagged = events.with_row_index("__row").with_columns(
        cond.alias(f) for (cond, _), f in zip(additions, flags, strict=True)
    )
    hit = pl.any_horizontal(flags)
    hits = flagged.filter(hit)
    if hits.is_empty():
        return events
    joined = pl.concat_str(
        [
            pl.when(pl.col(f)).then(pl.lit("".join(t + "\x1f" for t in tags)))
            for f, (_, tags) in zip(flags, additions, strict=True)
        ],
        ignore_nulls=True,
    )
    added = joined.str.strip_suffix("\x1f").str.split("\x1f")
    hits = hits.with_columns(
        pl.col(column).fill_null([]).list.concat(added).list.unique(maintain_order=True)
    )
    return pl.concat([flagged.filter(~hit), hits]).sort("__row").drop(["__row", *flags])
