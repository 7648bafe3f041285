"""Building blocks for pre-ingest hooks on events frames.

Metadata repeats: millions of columns share a few thousand names, and owner lists a few
hundred values. `on_distinct` computes an expression once per distinct key and joins it
back, which is what makes the hooks fast on large batches.
"""

from __future__ import annotations

import polars as pl

SEP = "\x1f"  # unit separator: never part of a tag or a user name


def on_distinct(
    events: pl.DataFrame, keys: list[pl.Expr], values: dict[str, pl.Expr]
) -> pl.DataFrame:
    """`events` with columns `values` computed once per distinct combination of `keys`
    (null keys included), joined back in the original row order."""
    key_names = [f"__key_{i}" for i in range(len(keys))]
    # Only the keys and the columns the values read take part in the join: the rest of the
    # (wide) frame is never copied, the results are put back beside it.
    inputs = sorted({name for v in values.values() for name in v.meta.root_names()})
    keyed = events.select(*(k.alias(n) for k, n in zip(keys, key_names, strict=True)), *inputs)
    distinct = keyed.unique(key_names).with_columns(**values).select(*key_names, *values)
    joined = keyed.select(key_names).join(
        distinct, on=key_names, how="left", nulls_equal=True, maintain_order="left"
    )
    return events.with_columns(joined.select(*values))


def _normalise_principals(col: str) -> pl.Expr:
    # Source systems spell the same Atlan user as " JDoe", "jdoe"; Atlan usernames are
    # lower case. Keep null (attribute absent) apart from [] (explicitly no owners).
    # The list namespace's own sort is far slower on strings than sorting inside eval.
    name = pl.element().str.strip_chars().str.to_lowercase()
    return (
        pl.col(col).list.eval(name.filter(name != "")).list.unique().list.eval(pl.element().sort())
    )


def normalise_owners(events: pl.DataFrame) -> pl.DataFrame:
    """Owner users and groups trimmed, lower-cased, de-duplicated and sorted."""
    # Lists are join keys as they are: null (absent) and [] (explicitly none) stay apart.
    columns = ("owner_users", "owner_groups")
    keys = [pl.col(c) for c in columns]
    return on_distinct(events, keys, {c: _normalise_principals(c) for c in columns})


def tag_string(additions: list[tuple[pl.Expr, list[str]]]) -> pl.Expr:
    """The tags of every addition whose condition holds, as one separated string (null when
    none holds): far cheaper in polars than concatenating many literal lists."""
    return pl.concat_str(
        [pl.when(cond).then(pl.lit("".join(t + SEP for t in tags))) for cond, tags in additions],
        ignore_nulls=True,
    ).replace("", None)


def with_tags(column: str, tags: pl.Expr) -> pl.Expr:
    """`column` (a list of strings) plus the separated tags of `tags` (a string expression,
    see tag_string), without duplicates, in order; unchanged where `tags` is null."""
    added = tags.str.strip_suffix(SEP).str.split(SEP)
    return (
        pl.when(tags.is_not_null())
        .then(pl.col(column).fill_null([]).list.concat(added).list.unique(maintain_order=True))
        .otherwise(pl.col(column))
    )
