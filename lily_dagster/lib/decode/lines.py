"""JSON Lines bytes cut into payload frames (`origin`, `value`) column-wise: a chunk of the
file is split at its newlines by polars in one pass, not a Python object per line."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import polars as pl

# What bytes.strip() strips: a line of only these is blank (skipped).
_WHITESPACE = " \t\n\r\x0b\x0c"


def line_frames(
    base: str, chunks: Iterable[bytes], batch_rows: int
) -> Iterator[tuple[pl.DataFrame, str]]:
    """Frames of at most `batch_rows` non-blank lines of the bytes `chunks` make, each with
    the origin of its first row: `origin` (`<base><line number>`, lines from 1) and `value`
    (the line's bytes, without its newline and a carriage return before it)."""
    pending = b""  # the unfinished line a chunk ends with
    first = 1  # number of the first line of the next cut
    parts: list[pl.DataFrame] = []
    held = 0
    for chunk in chunks:
        cut = chunk.rfind(b"\n")
        if cut < 0:
            pending += chunk
            continue
        start = chunk.find(b"\n")  # the line `pending` began ends here
        pieces = [pending + chunk[:start]] + ([chunk[start + 1 : cut]] if cut > start else [])
        part, count = _lines(pieces, first)
        pending, first = chunk[cut + 1 :], first + count
        parts.append(part)
        held += part.height
        while held >= batch_rows:
            batch, rest = _take(parts, batch_rows)
            parts, held = ([rest] if rest.height else []), rest.height
            yield _framed(base, batch)
    if pending:
        parts.append(_lines([pending], first)[0])
    if parts:
        rest = pl.concat(parts)
        for start in range(0, rest.height, batch_rows):
            yield _framed(base, rest.slice(start, batch_rows))


def _lines(pieces: list[bytes], first: int) -> tuple[pl.DataFrame, int]:
    """The non-blank lines of `pieces` (newline-separated text, lines not split between
    two) with their numbers (`first` for the first), and how many lines they hold."""
    try:
        text = pl.Series(pieces, dtype=pl.Binary).cast(pl.String)
    except pl.exceptions.PolarsError:  # bytes that are not UTF-8: cut in Python
        cut = [line.removesuffix(b"\r") for piece in pieces for line in piece.split(b"\n")]
        values = pl.Series("value", cut, dtype=pl.Binary)
    else:
        lines = pl.select(pl.lit(text).str.split("\n").explode().str.strip_suffix("\r"))
        values = lines.to_series().cast(pl.Binary).alias("value")
    numbers = pl.int_range(first, first + values.len(), dtype=pl.UInt64, eager=True)
    frame = pl.DataFrame([numbers.alias("line"), values])
    blank = _blank(values)
    return (frame.filter(~blank) if blank.any() else frame), values.len()


def _blank(values: pl.Series) -> pl.Series:
    """Lines of whitespace only (bytes.strip() empties them): those that start with
    whitespace, or are empty, are looked at in Python (few)."""
    maybe = values.bin.size() == 0
    for space in _WHITESPACE.encode():
        maybe = maybe | values.bin.starts_with(bytes([space]))
    if not maybe.any():
        return maybe
    rows = maybe.arg_true()
    blank = [not v.strip() for v in values.gather(rows).to_list()]
    return maybe.scatter(rows, pl.Series(blank, dtype=pl.Boolean))


def _take(parts: list[pl.DataFrame], rows: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    whole = pl.concat(parts) if len(parts) > 1 else parts[0]
    return whole.slice(0, rows), whole.slice(rows)


def _framed(base: str, lines: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    numbers = lines.get_column("line")
    origin = (base + numbers.cast(pl.String)).alias("origin")
    return pl.DataFrame([origin, lines.get_column("value")]), f"{base}{numbers[0]}"
