"""Erasing a data subject from the hub's stored rows (CONTRACT.md §7), on opened
(plaintext) frames: which rows hold the subject and what they become. `local.py` reads,
seals and writes them in one transaction.

Columns are scrubbed by kind: free text (descriptions) has the subject's occurrences
replaced by `[erased]`; owner lists lose the elements equal to it; JSON documents (the
extra attributes, a change's `before`, a partial change, a raw payload) are walked, so that
an owner list inside them loses the subject too instead of holding `[erased]`. A row holds
the subject exactly when scrubbing changes it, which makes erasing twice a no-op.
"""

from __future__ import annotations

import json

import polars as pl

from lily_dagster.lib.gdpr.payload import scrub_payload_text
from lily_dagster.lib.gdpr.subject import Subject

# The record fields an erasure can change, as a change's `changed` names them.
ERASABLE_FIELDS = ("description", "owner_users", "owner_groups", "attributes")


class Eraser:
    """Scrubs one subject out of values and frames."""

    def __init__(self, subject: Subject) -> None:
        self.subject = subject
        # In JSON text the subject may be written escaped (non-ASCII as \\uXXXX).
        forms = {subject.value, json.dumps(subject.value)[1:-1]}
        self._folded = sorted({f.lower() for f in forms})

    def scrub_json(self, text: str | None) -> str | None:
        """A JSON document with the subject erased (the same string when it holds none);
        text that is not JSON is scrubbed as text."""
        scrubbed = scrub_payload_text(self.subject, text)
        return text if scrubbed is None else scrubbed

    def _documents(self, series: pl.Series) -> pl.Series:
        """A column of JSON documents scrubbed (parsed only where the subject may be)."""
        lowered = series.str.to_lowercase()
        maybe = pl.select(
            pl.any_horizontal([lowered.str.contains(f, literal=True) for f in self._folded])
        ).to_series()
        if not maybe.any():
            return series
        values = series.to_list()
        for i in maybe.arg_true().to_list():
            values[i] = self.scrub_json(values[i])
        return pl.Series(series.name, values, dtype=pl.String)

    def scrub(
        self,
        frame: pl.DataFrame,
        text: tuple[str, ...] = (),
        lists: tuple[str, ...] = (),
        documents: tuple[str, ...] = (),
    ) -> tuple[pl.DataFrame, pl.Series]:
        """(`frame` with the subject erased from its present columns of each kind, per row
        whether that changed it)."""
        text, lists, documents = (tuple(c for c in g if c in frame.columns) for g in
                                  (text, lists, documents))  # fmt: skip
        scrubbed = self.subject.scrub_frame(frame, text=text, lists=lists)
        if documents:
            scrubbed = scrubbed.with_columns(
                self._documents(frame.get_column(c)) for c in documents
            )
        return scrubbed, differs(frame, scrubbed, (*text, *lists, *documents))


def differs(old: pl.DataFrame, new: pl.DataFrame, columns: tuple[str, ...]) -> pl.Series:
    """Per row: whether any of `columns` differs between two aligned frames."""
    if not columns:
        return pl.Series("differs", [False] * old.height, dtype=pl.Boolean)
    return pl.select(
        pl.any_horizontal(
            [~old.get_column(c).eq_missing(new.get_column(c)) for c in columns]
        ).alias("differs")
    ).to_series()


def changed_fields(old: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """(qualified_name, changed): the ERASABLE_FIELDS that differ between the records as
    users saw them and as they see them after the erasure (same names), for the records
    where any does."""
    joined = old.select("qualified_name", *ERASABLE_FIELDS).join(
        new.select("qualified_name", *ERASABLE_FIELDS), on="qualified_name", suffix="__new"
    )
    changed = pl.concat_list(
        [
            pl.when(~pl.col(c).eq_missing(pl.col(f"{c}__new"))).then(pl.lit(c))
            for c in ERASABLE_FIELDS
        ]
    ).list.drop_nulls()
    return (
        joined.select("qualified_name", changed.alias("changed"))
        .filter(pl.col("changed").list.len() > 0)
        .sort("qualified_name")
    )


__all__ = ["ERASABLE_FIELDS", "Eraser", "changed_fields", "differs"]
