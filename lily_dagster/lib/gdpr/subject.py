"""A data subject of an erasure request (CONTRACT.md §7): a user id or an e-mail address,
compared case-insensitively. Owners equal to it are dropped; its occurrences anywhere in
free text (descriptions, sample values, raw payloads, JSON documents) become `[erased]`."""

from __future__ import annotations

import re
from collections.abc import Iterable

import polars as pl

from lily_dagster.settings import ConfigError

ERASED = "[erased]"


class Subject:
    def __init__(self, raw: str) -> None:
        value = raw.strip()
        if not value or any(c in value for c in "\n\r\t\x00"):
            raise ConfigError(f"--subject {raw!r}: expected a user id or an e-mail address")
        self.value = value
        self.folded = value.casefold()
        self._pattern = "(?i)" + re.escape(value)
        self._regex = re.compile(re.escape(value), re.IGNORECASE)

    def __repr__(self) -> str:  # never print the subject into logs by accident
        return "Subject(<redacted>)"

    # -- Python values -----------------------------------------------------------------
    def in_text(self, text: str | None) -> bool:
        return text is not None and self.folded in text.casefold()

    def scrub_text(self, text: str | None) -> str | None:
        return text if text is None else self._regex.sub(ERASED, text)

    def scrub_owners(self, owners: list[str] | None) -> list[str] | None:
        return owners if owners is None else [o for o in owners if o.casefold() != self.folded]

    # -- polars columns ----------------------------------------------------------------
    def text_expr(self, column: str) -> pl.Expr:
        return pl.col(column).str.replace_all(self._pattern, ERASED)

    def owners_expr(self, column: str) -> pl.Expr:
        return pl.col(column).list.eval(
            pl.element().filter(pl.element().str.to_lowercase() != self.value.lower())
        )

    def mentioned(
        self, frame: pl.DataFrame, text: Iterable[str] = (), lists: Iterable[str] = ()
    ) -> pl.Series:
        """Per row: whether any of the (present) columns holds the subject."""
        tests = [
            pl.col(c).str.contains(self._pattern).fill_null(False)
            for c in text
            if c in frame.columns
        ]
        tests += [
            pl.col(c)
            .list.eval(pl.element().str.to_lowercase() == self.value.lower())
            .list.any()
            .fill_null(False)
            for c in lists
            if c in frame.columns
        ]
        if not tests:
            return pl.Series("mentioned", [False] * frame.height, dtype=pl.Boolean)
        return frame.select(pl.any_horizontal(tests).alias("mentioned")).to_series()

    def scrub_frame(
        self, frame: pl.DataFrame, text: Iterable[str] = (), lists: Iterable[str] = ()
    ) -> pl.DataFrame:
        """`frame` with the subject erased from its (present) text and owner-list columns."""
        exprs = [self.text_expr(c) for c in text if c in frame.columns]
        exprs += [self.owners_expr(c) for c in lists if c in frame.columns]
        return frame.with_columns(exprs) if exprs else frame


__all__ = ["ERASED", "Subject"]
