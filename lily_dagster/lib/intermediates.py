"""The frames Dagster's IO manager hands from one ingest step to the next, under
$LILY_HOME/io, sealed tenant by tenant.

A step of one tenant partition hands on that tenant's rows. A run over a range of tenant
partitions (the sensors' multi-tenant runs) hands on one frame with several tenants' rows:
it is split by its `tenant` column and each tenant's rows are sealed with that tenant's
key, all in one file. One deployment-wide key for such frames would be simpler, but
`lily tenant delete` shreds a tenant by destroying its key, and a file sealed with a
shared key would keep that tenant's rows readable for as long as the file lives. Rows
keep their order within a tenant; the steps take their input tenant by tenant. Rows
without a tenant (a frame with no `tenant` column in a run of several partitions, or of
none) are sealed with the `_system` key.

Layout: MAGIC, a header line (JSON `[[tenant, length], ...]`), then each part's Parquet
bytes as sealed by its tenant's cipher. A plain Parquet file (written with encryption
off, or before) reads as it is.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from lily_dagster.lib.crypto import Ciphers

MAGIC = b"LILYPARTS1\n"
SYSTEM = "_system"  # the owner of rows that name no tenant


def write_frame(frame: pl.DataFrame, path: Path, tenants: Sequence[str], ciphers: Ciphers) -> None:
    """`frame` at `path`, each tenant's rows sealed with its key; `tenants` are the step's
    partition keys (the owner of the rows when the frame has no `tenant` column)."""
    parts = _parts(frame, tenants)
    ciphers_by_tenant = {tenant: ciphers(tenant) for tenant, _ in parts}
    if not any(c.enabled for c in ciphers_by_tenant.values()):
        frame.write_parquet(path)  # encryption off: what was written before
        return
    blobs = [
        (tenant, ciphers_by_tenant[tenant].seal_bytes(_parquet(part))) for tenant, part in parts
    ]
    header = json.dumps([[tenant, len(blob)] for tenant, blob in blobs]).encode() + b"\n"
    with path.open("wb") as out:
        out.write(MAGIC + header)
        for _, blob in blobs:
            out.write(blob)


def read_frame(path: Path, ciphers: Ciphers, columns: list[str] | None = None) -> pl.DataFrame:
    """The frame `write_frame` wrote (optionally only `columns`), or a plain Parquet file."""
    with path.open("rb") as data:
        if data.read(len(MAGIC)) != MAGIC:
            return pl.read_parquet(path, columns=columns)
        header = json.loads(data.readline())
        frames = []
        for tenant, length in header:
            blob = ciphers(tenant).open_bytes(data.read(length))
            frames.append(pl.read_parquet(io.BytesIO(blob), columns=columns))
    return pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]


def _parts(frame: pl.DataFrame, tenants: Sequence[str]) -> list[tuple[str, pl.DataFrame]]:
    """The frame's rows by owning tenant, in order of first appearance."""
    owner = tenants[0] if len(tenants) == 1 else SYSTEM
    if "tenant" not in frame.columns or frame.height == 0:
        return [(owner, frame)]
    keyed = frame.with_columns(pl.col("tenant").cast(pl.String).fill_null(owner).alias("__owner"))
    parts = keyed.partition_by("__owner", maintain_order=True, include_key=False, as_dict=True)
    return [(str(key[0]), part) for key, part in parts.items()]


def _parquet(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


__all__ = ["MAGIC", "SYSTEM", "read_frame", "write_frame"]
