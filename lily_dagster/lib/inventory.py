"""Source snapshots: envelope files (CONTRACT.md §1) under a local path or an S3 prefix.

A snapshot is a file, or every `*.jsonl`, `*.ndjson` and `*.parquet` file under a directory
or `s3://bucket/prefix` (hidden and `_`-prefixed names, such as Spark's `_SUCCESS`, are
skipped). JSON Lines hold one envelope per line; Parquet holds the same fields, with `asset`
as a struct or flattened into `asset_*` columns.

The reader yields raw payloads in bounded batches in the landing format (LANDED_SCHEMA), and
Parquet rows become the same envelope JSON a JSON Lines file holds, so every row passes the
one gate live events pass (`check_payloads`): there is a single envelope parser. A file that
cannot be read at all raises `InventoryError` with one line naming it.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any, cast

import polars as pl

from lily_dagster.lib.envelope import empty_events, empty_rejects
from lily_dagster.lib.staging import landed_frame
from lily_dagster.lib.validation import check_payloads
from lily_dagster.settings import ConfigError, Settings

SNAPSHOT_SUFFIXES = (".jsonl", ".ndjson", ".parquet")
DEFAULT_BATCH_ROWS = 50_000
ENVELOPE_COLUMNS = ("event_id", "tenant", "source", "op", "event_time")
FLAT_ASSET_COLUMNS = ("asset_type_name", "asset_qualified_name", "asset_name")


class InventoryError(ConfigError):
    """A snapshot that cannot be read (missing, empty, corrupt, unreachable). A ConfigError,
    so every command and run reports it as its one-line error."""


@dataclass(frozen=True)
class SnapshotFile:
    uri: str  # a local path or s3://bucket/key
    size: int
    modified: datetime
    etag: str = ""

    @property
    def is_parquet(self) -> bool:
        return self.uri.endswith(".parquet")


def _wanted(relative: str) -> bool:
    """Whether a file is part of the snapshot, by its path under the snapshot's root: the
    right suffix, and nothing hidden on the way (`.tmp/`, `_temporary/`, `_SUCCESS`)."""
    parts = relative.split("/")
    return parts[-1].endswith(SNAPSHOT_SUFFIXES) and not any(
        p.startswith((".", "_")) for p in parts
    )


def resolve_source(source: str, base_dir: Path | None) -> str:
    """An S3 URI as is; a relative local path read from `base_dir` (the LILY_CONFIG file's
    directory), so a snapshot path does not depend on where the daemon was started."""
    if source.startswith("s3://") or base_dir is None or Path(source).is_absolute():
        return source
    return str(base_dir / source)


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _s3_client() -> Any:
    import boto3  # only when a snapshot is on S3

    # The same endpoint variable as the S3 inbox: one S3-compatible store for both.
    return boto3.client("s3", endpoint_url=Settings.from_env().s3_endpoint_url)


def _s3_error(uri: str, what: str, exc: Exception) -> InventoryError:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    detail = f"{code}: " if code else ""
    message = " ".join(str(exc).split())
    return InventoryError(f"snapshot {uri}: cannot {what} ({detail}{message})")


def list_snapshot(source: str) -> list[SnapshotFile]:
    """The snapshot's files in name order; InventoryError when there are none."""
    files = _list_s3(source) if source.startswith("s3://") else _list_local(source)
    if not files:
        raise InventoryError(
            f"snapshot {source}: no snapshot files (*.jsonl, *.ndjson or *.parquet)"
        )
    return files


def _list_local(source: str) -> list[SnapshotFile]:
    root = Path(source)
    if not root.exists():
        raise InventoryError(f"snapshot {source}: no such file or directory")
    if root.is_file():
        if not root.name.endswith(SNAPSHOT_SUFFIXES):
            raise InventoryError(
                f"snapshot {source}: not a snapshot file (expected *.jsonl, *.ndjson or *.parquet)"
            )
        paths = [root]
    else:
        paths = sorted(
            p for p in root.rglob("*") if p.is_file() and _wanted(p.relative_to(root).as_posix())
        )
    files = []
    for path in paths:
        stat = path.stat()
        files.append(
            SnapshotFile(str(path), stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC))
        )
    return files


def _list_s3(source: str) -> list[SnapshotFile]:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = _split_s3(source)
    # A key naming one file is that file; anything else is a directory-like prefix.
    single = key.endswith(SNAPSHOT_SUFFIXES)
    prefix = key if single or not key else key.rstrip("/") + "/"
    files = []
    try:
        pages = _s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", []):
                wanted = item["Key"] == key if single else _wanted(item["Key"][len(prefix) :])
                if wanted:
                    files.append(
                        SnapshotFile(
                            f"s3://{bucket}/{item['Key']}",
                            int(item["Size"]),
                            item["LastModified"].astimezone(UTC),
                            str(item.get("ETag", "")).strip('"'),
                        )
                    )
    except (BotoCoreError, ClientError) as exc:
        raise _s3_error(source, "list it", exc) from None
    return sorted(files, key=lambda f: f.uri)


def iter_snapshot_batches(
    source: str | Sequence[SnapshotFile], batch_rows: int = DEFAULT_BATCH_ROWS
) -> Iterator[pl.DataFrame]:
    """Raw envelope payloads of a snapshot (a source string, or files from `list_snapshot`)
    in frames of at most `batch_rows` rows, in the landing format: `origin` is
    `snapshot:<file>#<line or row, from 1>`, `value` the envelope JSON, `received_at` the
    file's modification time. A batch never spans two files; memory stays bounded by the
    batch (a Parquet object on S3 is spooled to a temporary file first)."""
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
    files = list_snapshot(source) if isinstance(source, str) else list(source)
    client = _s3_client() if any(f.uri.startswith("s3://") for f in files) else None
    for file in files:
        if file.uri.startswith("s3://"):
            yield from _s3_batches(client, file, batch_rows)
        else:
            with open(file.uri, "rb") as handle:
                yield from _file_batches(file, handle, batch_rows)


def _s3_batches(client: Any, file: SnapshotFile, batch_rows: int) -> Iterator[pl.DataFrame]:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = _split_s3(file.uri)
    try:
        if file.is_parquet:  # Parquet needs random access (its footer comes last): spool it
            with tempfile.TemporaryFile() as spool:
                client.download_fileobj(bucket, key, spool)
                spool.seek(0)
                yield from _parquet_batches(file, spool, batch_rows)
        else:
            body = client.get_object(Bucket=bucket, Key=key)["Body"]
            yield from _line_batches(file, body.iter_lines(), batch_rows)
    except (BotoCoreError, ClientError) as exc:
        raise _s3_error(file.uri, "read it", exc) from None


def _file_batches(file: SnapshotFile, handle: IO[bytes], batch_rows: int) -> Iterator[pl.DataFrame]:
    if file.is_parquet:
        yield from _parquet_batches(file, handle, batch_rows)
    else:
        yield from _line_batches(file, handle, batch_rows)


def _landed(file: SnapshotFile, numbers: list[int], values: list[bytes]) -> pl.DataFrame:
    return landed_frame(
        [f"snapshot:{file.uri}#{n}" for n in numbers], values, [file.modified] * len(values)
    )


def _line_batches(
    file: SnapshotFile, lines: Iterable[bytes], batch_rows: int
) -> Iterator[pl.DataFrame]:
    numbers: list[int] = []
    values: list[bytes] = []
    for number, line in enumerate(lines, start=1):
        value = line.rstrip(b"\r\n")
        if not value.strip():
            continue  # blank lines separate nothing in JSON Lines
        numbers.append(number)
        values.append(value)
        if len(values) >= batch_rows:
            yield _landed(file, numbers, values)
            numbers, values = [], []
    if values:
        yield _landed(file, numbers, values)


def _parquet_batches(
    file: SnapshotFile, handle: IO[bytes], batch_rows: int
) -> Iterator[pl.DataFrame]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(handle)
        columns = parquet.schema_arrow.names
    except (pa.ArrowException, OSError) as exc:
        raise _parquet_error(file, exc) from None
    _check_columns(file, columns)
    row = 0
    try:
        for batch in parquet.iter_batches(batch_size=batch_rows):
            frame = cast(pl.DataFrame, pl.from_arrow(batch))  # a record batch makes a frame
            values = [
                json.dumps(parquet_envelope(r), separators=(",", ":"), default=_json_value).encode()
                for r in frame.iter_rows(named=True)
            ]
            yield _landed(file, list(range(row + 1, row + 1 + len(values))), values)
            row += len(values)
    except (pa.ArrowException, OSError) as exc:
        raise _parquet_error(file, exc) from None


def _parquet_error(file: SnapshotFile, exc: Exception) -> InventoryError:
    first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return InventoryError(f"snapshot {file.uri}: not a readable Parquet file ({first.strip()})")


def _check_columns(file: SnapshotFile, columns: Sequence[str]) -> None:
    missing = [c for c in ENVELOPE_COLUMNS if c not in columns]
    if "asset" not in columns:
        missing += [c for c in FLAT_ASSET_COLUMNS if c not in columns]
    if missing:
        raise InventoryError(
            f"snapshot {file.uri}: missing columns {missing}; expected the envelope fields "
            "with an `asset` struct or flattened `asset_*` columns (CONTRACT.md §1)"
        )


def _present(values: dict[str, Any]) -> dict[str, Any]:
    # A Parquet struct has every field in every row: a null is an absent key, as in JSON.
    return {k: v for k, v in values.items() if v is not None}


def _as_object(value: Any) -> Any:
    """attributes from Parquet: a struct (dict), a map (dict, or key/value pairs) or a
    JSON object string; anything else is left for the decoder to refuse."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, list) and all(
        isinstance(i, dict) and set(i) == {"key", "value"} for i in value
    ):
        return {i["key"]: i["value"] for i in value}
    return value


def parquet_envelope(row: dict[str, Any]) -> dict[str, Any]:
    """One Parquet row (nested `asset` struct or flattened `asset_*` columns) as the
    envelope dict a JSON Lines file would hold."""
    is_asset = {k for k in row if k == "asset" or k.startswith("asset_")}
    envelope = _present({k: v for k, v in row.items() if k not in is_asset})
    if "asset" in row:
        asset = row["asset"]
    else:
        asset = {k.removeprefix("asset_"): v for k, v in row.items() if k.startswith("asset_")}
    if isinstance(asset, dict):
        asset = _present(asset)
        if "attributes" in asset:
            attributes = _as_object(asset["attributes"])
            asset["attributes"] = (
                _present(attributes) if isinstance(attributes, dict) else attributes
            )
    if asset is not None:
        envelope["asset"] = asset
    return envelope


def _json_value(value: Any) -> Any:
    """JSON for the values Parquet has and JSON lacks. A datetime without a zone stays
    without one, so the decoder refuses it as bad_event_time like any other."""
    if isinstance(value, datetime):
        text = value.isoformat()
        return text.removesuffix("+00:00") + "Z" if value.utcoffset() == timedelta(0) else text
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)  # Decimal, time, timedelta


def snapshot_identity(files: Sequence[SnapshotFile]) -> tuple[str, datetime]:
    """A stable id of the snapshot (the same files give the same id, so a rerun writes the
    same events) and its time: when its newest file was written."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.uri}|{f.size}|{f.modified.isoformat()}|{f.etag}\n".encode())
    return digest.hexdigest()[:16], max(f.modified for f in files)


@dataclass(frozen=True)
class Snapshot:
    source: str
    snapshot_id: str
    taken_at: datetime  # the newest file's modification time
    files: int
    rows: int  # payloads read (blank lines excepted)
    events: pl.DataFrame  # EVENT_SCHEMA: the rows that pass every rule
    rejects: pl.DataFrame  # REJECT_SCHEMA: the rows that do not, with their reasons
    failures_by_rule: dict[str, int] = field(default_factory=dict)


def read_snapshot(
    source: str,
    tenant: str,
    max_event_bytes: int,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> Snapshot:
    """A whole snapshot for `tenant`, each batch through `check_payloads` (the live gate)."""
    files = list_snapshot(source)
    snapshot_id, taken_at = snapshot_identity(files)
    events: list[pl.DataFrame] = []
    rejects: list[pl.DataFrame] = []
    failures: dict[str, int] = {}
    rows = 0
    for batch in iter_snapshot_batches(files, batch_rows):
        checked = check_payloads(
            batch.get_column("value").to_list(),
            batch.get_column("origin").to_list(),
            tenant,
            max_event_bytes,
        )
        rows += batch.height
        events.append(checked.valid)
        rejects.append(checked.rejects)
        for rule, n in checked.failures_by_rule.items():
            failures[rule] = failures.get(rule, 0) + n
    return Snapshot(
        source=source,
        snapshot_id=snapshot_id,
        taken_at=taken_at,
        files=len(files),
        rows=rows,
        events=pl.concat(events) if events else empty_events(),
        rejects=pl.concat(rejects) if rejects else empty_rejects(),
        failures_by_rule=failures,
    )
