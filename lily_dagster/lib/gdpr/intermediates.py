"""Erasing a data subject from the frames Dagster's IO manager left under $LILY_HOME/io
(lib/intermediates.py): landed payloads and events handed from one ingest step to the next,
kept until run retention deletes them.

Only the tenant's rows are read and rewritten; a file sealed tenant by tenant names its
tenants in its header, so the files of other tenants are never opened. Each file is
rewritten atomically, so an interrupted erasure leaves every file whole and a second one
finishes the rest.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from lily_dagster.lib.crypto import Ciphers
from lily_dagster.lib.durable import write_atomic
from lily_dagster.lib.gdpr.payload import scrub_payload_column
from lily_dagster.lib.gdpr.subject import Subject
from lily_dagster.lib.hub.erasure import Eraser
from lily_dagster.lib.intermediates import MAGIC, read_frame, write_frame

TEXT = ("description",)
LISTS = ("owner_users", "owner_groups")
DOCUMENTS = ("attributes", "patch", "raw")
PAYLOADS = ("value",)  # landed payloads, as bytes


def erase_intermediates(
    io_dir: Path, ciphers: Ciphers, tenant: str, subject: Subject, dry_run: bool = False
) -> int:
    """How many intermediate files held the subject among the tenant's rows (and were
    rewritten without it, unless `dry_run`)."""
    if not io_dir.is_dir():
        return 0
    changed = 0
    for path in sorted(io_dir.rglob("*.parquet")):
        owners = _tenants_of(path)
        if owners is not None and tenant not in owners:
            continue
        frame = read_frame(path, ciphers)
        mine = _rows_of(frame, tenant, path)
        if not mine.any():
            continue
        indexed = frame.with_row_index("__row")
        scrubbed, touched = _scrub(indexed.filter(mine), subject)
        if not touched:
            continue
        changed += 1
        if not dry_run:
            # The rows in their order: a step reads a frame as the step before wrote it.
            whole = pl.concat([indexed.filter(~mine), scrubbed]).sort("__row").drop("__row")
            _rewrite(path, whole, owners or [path.stem], ciphers)
    return changed


def _rewrite(path: Path, frame: pl.DataFrame, tenants: list[str], ciphers: Ciphers) -> None:
    def write(tmp: Path) -> None:
        write_frame(frame, tmp, tenants, ciphers)

    write_atomic(path, write)


def _tenants_of(path: Path) -> list[str] | None:
    """The tenants a sealed file holds, from its header (None: a plain Parquet file)."""
    with path.open("rb") as data:
        if data.read(len(MAGIC)) != MAGIC:
            return None
        return [str(tenant) for tenant, _ in json.loads(data.readline())]


def _rows_of(frame: pl.DataFrame, tenant: str, path: Path) -> pl.Series:
    """Which rows are the tenant's: by their `tenant` column, else by the file's name (a
    step of the tenant's partition)."""
    if "tenant" in frame.columns:
        return frame.get_column("tenant").eq_missing(tenant)
    return pl.Series([path.stem == tenant] * frame.height, dtype=pl.Boolean)


def _scrub(frame: pl.DataFrame, subject: Subject) -> tuple[pl.DataFrame, bool]:
    """The rows with the subject erased, and whether any changed."""
    scrubbed, rows = Eraser(subject).scrub(frame, text=TEXT, lists=LISTS, documents=DOCUMENTS)
    touched = bool(rows.any())
    for column in PAYLOADS:
        if column in frame.columns and frame.schema[column] == pl.Binary:
            series = scrub_payload_column(subject, frame.get_column(column))
            if series is not None:
                touched = True
                scrubbed = scrubbed.with_columns(series)
    return scrubbed, touched


__all__ = ["erase_intermediates"]
