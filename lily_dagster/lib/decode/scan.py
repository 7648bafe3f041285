"""Snapshot files read lazily in bounded frames: Parquet a slice at a time (nested or
flattened rows, as they are), JSON Lines as payload frames; local files and S3."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

import polars as pl

from lily_dagster.lib.decode.lines import line_frames
from lily_dagster.lib.inventory import (
    InventoryError,
    SnapshotFile,
    _check_columns,
    _parquet_error,
    _s3_client,
    _s3_error,
    _split_s3,
    list_snapshot,
)

_CHUNK_BYTES = 32 << 20  # JSON Lines are cut a chunk at a time


def skipped_origin(origin: str, rows: int) -> str:
    """The first-row origin (`<where>#<n>`) of a frame less its first `rows` rows (JSON
    Lines frames carry each row's origin in a column, which slicing keeps)."""
    where, sep, number = origin.rpartition("#")
    return f"{where}#{int(number) + rows}" if sep and number.isdigit() else origin


def scan_envelopes(source: str | Path, batch_rows: int) -> Iterator[tuple[pl.DataFrame, str]]:
    """Every snapshot file under `source` (a file, a directory or an s3:// prefix, as
    `inventory.list_snapshot` lists them) read lazily in frames of at most `batch_rows`
    rows, each with the origin of its first row, `file:<uri>#<n>` (rows and lines from 1).

    Parquet rows come as they are (nested or flattened; `decode_frame` reads both), read by
    polars a slice at a time (only the row groups a slice needs). JSON Lines come as payload
    frames, `origin` (`file:<uri>#<line>`) and `value` (the line's bytes), cut column-wise
    (`lines`); blank lines are skipped, and a line that is not JSON is decoded into a
    malformed_json reject like any other. A batch never spans two files. A file that cannot
    be read (truncated or corrupt Parquet, missing envelope columns, S3 errors) raises
    InventoryError naming it."""
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
    files = list_snapshot(str(source))
    client = _s3_client() if any(f.uri.startswith("s3://") for f in files) else None
    for file in files:
        if file.uri.startswith("s3://"):
            yield from _s3_frames(client, file, batch_rows)
        elif file.is_parquet:
            yield from _parquet_frames(file, file.uri, batch_rows)
        else:
            try:
                handle = open(file.uri, "rb")  # noqa: SIM115 - closed below; the generator pauses
            except OSError as exc:
                raise InventoryError(f"snapshot {file.uri}: cannot read it ({exc})") from None
            with handle:
                yield from line_frames(_base(file), _chunks(handle), batch_rows)


def _base(file: SnapshotFile) -> str:
    return f"file:{file.uri}#"


def _chunks(handle: IO[bytes]) -> Iterator[bytes]:
    while chunk := handle.read(_CHUNK_BYTES):
        yield chunk


def _s3_frames(
    client: Any, file: SnapshotFile, batch_rows: int
) -> Iterator[tuple[pl.DataFrame, str]]:
    import tempfile

    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = _split_s3(file.uri)
    try:
        if file.is_parquet:  # Parquet needs random access (its footer comes last): spool it
            with tempfile.NamedTemporaryFile(suffix=".parquet") as spool:
                client.download_fileobj(bucket, key, spool)
                spool.flush()
                yield from _parquet_frames(file, spool.name, batch_rows)
        else:
            body = client.get_object(Bucket=bucket, Key=key)["Body"]
            yield from line_frames(_base(file), body.iter_chunks(_CHUNK_BYTES), batch_rows)
    except (BotoCoreError, ClientError) as exc:
        raise _s3_error(file.uri, "read it", exc) from None


def _parquet_frames(
    file: SnapshotFile, path: str, batch_rows: int
) -> Iterator[tuple[pl.DataFrame, str]]:
    def scan() -> pl.LazyFrame:
        return pl.scan_parquet(path, glob=False, hive_partitioning=False)

    try:
        columns = list(scan().collect_schema())
        rows = cast(int, scan().select(pl.len()).collect().item())
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise _parquet_error(file, exc) from None
    _check_columns(file, columns)
    for start in range(0, rows, batch_rows):
        try:
            frame = scan().slice(start, batch_rows).collect()
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise _parquet_error(file, exc) from None
        yield frame, f"file:{file.uri}#{start + 1}"
