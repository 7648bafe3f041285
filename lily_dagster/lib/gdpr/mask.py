"""Events naming an erased subject, masked on ingest (the `erased-subjects` hook).

The erased-subjects list holds salted hashes only, so a subject is found by hashing what
could be one: the tokens of an event's free text (description, attributes with their
sample values, a partial change) and its owners. A token is a run of
letters, digits and `. _ % + - @` (e-mail addresses, user ids); its candidates are the
token and every run of its whole parts between those separators, case-folded: from
`Jane.Doe@Acme.com` come `jane.doe@acme.com`, `jane.doe`, `doe@acme`, `acme.com`, ... A
subject with any other character (a space: `Jane Doe`; `o'brien`, `ACME\\jdoe`) is never a
candidate, so events naming it are not masked: `findable` tells.

A row naming a found subject is masked as `lily gdpr erase` masks the hub: owners equal to
it dropped, its occurrences in text replaced by `[erased]` (JSON text - attributes, partial
changes, raw payloads - keeps its shape: owner lists lose the element). An occurrence is
what the search can find: the subject between characters that are not letters or digits
(`jdoe` in `jdoe@acme.com` or `jdoe.`, not in `jdoes`), so whether a row is masked never
depends on the other rows of its batch.
"""

from __future__ import annotations

import re

import polars as pl

from lily_dagster.lib.gdpr.erased import ErasedList
from lily_dagster.lib.gdpr.payload import scrub_json_text
from lily_dagster.lib.gdpr.subject import ERASED, Subject

TEXT_COLUMNS = ("description", "attributes")  # plain text, masked by polars
JSON_COLUMNS = ("patch", "raw")  # whole JSON documents, masked value by value
# Where subjects are looked for. Not the raw payload: what it holds beside these (names,
# qualified names, ids, keys of the envelope Lily ignores) is never scrubbed from the hub
# either, and tokenising it would cost more than the rest of the pipeline; it is masked in
# every row that names a subject found here.
SEARCHED_COLUMNS = ("description", "attributes", "patch")
OWNER_COLUMNS = ("owner_users", "owner_groups")
TOKEN = r"[\w.%+@-]+"
_PART = re.compile(r"[^._%+@-]+")
_SEPARATORS = r"[._%+@-]"
_WHOLE = re.compile(TOKEN)
# Beyond this many parts a token is judged by itself and its parts alone (an id made of
# many dashed pieces is no user id, and all its spans would be many hashes).
MAX_PARTS = 8


def findable(subject: Subject) -> bool:
    """Whether the hook can find this subject in later events (a single token)."""
    folded = subject.folded
    return _WHOLE.fullmatch(folded) is not None and folded in candidates(folded)


def candidates(token: str) -> set[str]:
    """The token's candidate subjects, case-folded: every run of whole parts."""
    folded = token.casefold()
    parts = [(m.start(), m.end()) for m in _PART.finditer(folded)]
    if len(parts) > MAX_PARTS:
        return {folded.strip("._%+@-")} | {folded[a:b] for a, b in parts}
    return {folded[a : parts[j][1]] for i, (a, _) in enumerate(parts) for j in range(i, len(parts))}


def find_erased(events: pl.DataFrame, erased: ErasedList) -> list[Subject]:
    """The erased subjects that the events name (as Subjects: what they are erased as)."""
    if not erased.hashes or events.is_empty():
        return []
    tokens = _tokens(events, min(erased.lengths))
    # A token without separators is its only candidate: most (ids, names, words) are
    # dropped here by their length, without a hash (non-ASCII ones may fold to another).
    single = ~tokens.str.contains(_SEPARATORS) & ~tokens.str.contains(r"[^\x00-\x7f]")
    lengths = pl.Series(sorted(erased.lengths), dtype=pl.UInt32)
    tokens = tokens.filter(~single | tokens.str.len_chars().is_in(lengths.implode()))
    hashes, digest = erased.hashes, erased.digest
    found: set[str] = set()
    for token in tokens.to_list():
        for candidate in candidates(token):
            if len(candidate) in lengths and candidate not in found and digest(candidate) in hashes:
                found.add(candidate)
    return [Subject(value) for value in sorted(found)]


def _tokens(events: pl.DataFrame, min_length: int) -> pl.Series:
    """The distinct tokens of the events' text and their owners (whole values, trimmed),
    lower-cased, at least `min_length` long."""
    pieces = [
        events.get_column(c).unique().str.extract_all(TOKEN).explode()
        for c in SEARCHED_COLUMNS
        if c in events.columns
    ]
    pieces += [
        events.get_column(c).explode().unique().str.strip_chars()
        for c in OWNER_COLUMNS
        if c in events.columns
    ]
    if not pieces:
        return pl.Series("t", [], dtype=pl.String)
    tokens = pl.concat([p.alias("t").cast(pl.String) for p in pieces]).drop_nulls()
    tokens = tokens.str.to_lowercase().unique()
    return tokens.filter(tokens.str.len_chars() >= min_length)


def mask_events(events: pl.DataFrame, subjects: list[Subject]) -> pl.DataFrame:
    """The events with every subject masked in the rows that name one (other rows, and
    the frame's schema and order, untouched)."""
    if not subjects or events.is_empty():
        return events
    named = _naming(events, subjects)
    if not named.any():
        return events
    folded = [s.folded for s in subjects]
    masked = [
        pl.when(named).then(_text_expr(c, subjects)).otherwise(pl.col(c)).alias(c)
        for c in TEXT_COLUMNS
        if c in events.columns
    ]
    masked += [
        pl.when(named).then(_owners_expr(c, folded)).otherwise(pl.col(c)).alias(c)
        for c in OWNER_COLUMNS
        if c in events.columns
    ]
    events = events.with_columns(masked)
    rows = named.arg_true()
    for column in JSON_COLUMNS:
        if column in events.columns:
            values = events.get_column(column).gather(rows).to_list()
            scrubbed = pl.Series(
                [v if (new := scrub_json_text(v, subjects)) is None else new for v in values],
                dtype=pl.String,
            )
            events = events.with_columns(events.get_column(column).scatter(rows, scrubbed))
    return events


def _naming(events: pl.DataFrame, subjects: list[Subject]) -> pl.Series:
    """Per row: whether it names any of the subjects (text holds it, or an owner is it)."""
    pattern = _pattern(subjects)
    folded = [s.folded for s in subjects]
    tests = [
        pl.col(c).str.contains(pattern).fill_null(False)
        for c in (*TEXT_COLUMNS, *JSON_COLUMNS)
        if c in events.columns
    ]
    tests += [
        pl.col(c)
        .list.eval(pl.element().str.strip_chars().str.to_lowercase().is_in(folded))
        .list.any()
        .fill_null(False)
        for c in OWNER_COLUMNS
        if c in events.columns
    ]
    return events.select(pl.any_horizontal(tests).alias("named")).to_series()


def _alternatives(subjects: list[Subject]) -> str:
    """The subjects as one regex alternation, longest first (a subject inside another is
    replaced after it)."""
    ordered = sorted(subjects, key=lambda s: len(s.value), reverse=True)
    return "|".join(re.escape(s.value) for s in ordered)


def _pattern(subjects: list[Subject]) -> str:
    """The subjects between non-alphanumerics (polars' regex has no look-around: the
    boundaries are captured and put back)."""
    return rf"(?i)(^|[^\p{{L}}\p{{N}}])(?:{_alternatives(subjects)})([^\p{{L}}\p{{N}}]|$)"


def _python_pattern(subjects: list[Subject]) -> re.Pattern[str]:
    return re.compile(rf"(?<![^\W_])(?:{_alternatives(subjects)})(?![^\W_])", re.IGNORECASE)


def _text_expr(column: str, subjects: list[Subject]) -> pl.Expr:
    # Twice: two occurrences a single character apart share the boundary between them.
    pattern, kept = _pattern(subjects), "${1}" + ERASED + "${2}"
    return pl.col(column).str.replace_all(pattern, kept).str.replace_all(pattern, kept)


def _owners_expr(column: str, folded: list[str]) -> pl.Expr:
    element = pl.element()
    return pl.col(column).list.eval(
        element.filter(~element.str.strip_chars().str.to_lowercase().is_in(folded))
    )


__all__ = ["candidates", "find_erased", "findable", "mask_events"]
