"""LocalHub: the embedded hub, one DuckDB database per tenant under `$LILY_HOME/hub/`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import polars as pl

from lily_dagster.lib.hub.base import (
    RECORD_SCHEMA,
    UpsertResult,
    apply_patches,
    merge_records,
    record_to_export,
    reduce_batch,
    register_hub,
)

T = TypeVar("T")

_DDL = """
CREATE TABLE IF NOT EXISTS records (
    qualified_name VARCHAR PRIMARY KEY,
    type_name VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    description VARCHAR,
    owner_users VARCHAR[],
    owner_groups VARCHAR[],
    certificate_status VARCHAR,
    parent_qualified_name VARCHAR,
    attributes VARCHAR,
    classifications VARCHAR[],
    inputs VARCHAR[],
    outputs VARCHAR[],
    content_upsert BOOLEAN NOT NULL,
    content_time TIMESTAMPTZ NOT NULL,
    content_id VARCHAR NOT NULL,
    event_time TIMESTAMPTZ NOT NULL,
    event_id VARCHAR NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    version BIGINT NOT NULL
)
"""


class HubLockedError(RuntimeError):
    """The tenant's database stayed locked by another process past the retry budget."""


@register_hub("local")
class LocalHub:
    name = "local"

    def __init__(self, root: Path, lock_timeout_s: float = 120.0) -> None:
        self.root = root
        self.lock_timeout_s = lock_timeout_s

    def path(self, tenant: str) -> Path:
        return self.root / f"{tenant}.duckdb"

    @contextmanager
    def _connect(self, tenant: str, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        self.root.mkdir(parents=True, exist_ok=True)
        con = self._with_lock_retry(
            lambda: duckdb.connect(str(self.path(tenant)), read_only=read_only)
        )
        try:
            yield con
        finally:
            con.close()

    def _with_lock_retry(self, fn: Callable[[], T]) -> T:
        # DuckDB allows one writing process per file; runs of one tenant are serialised by
        # the run queue, but the CLI (export) or a backfill may hold it for a moment.
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                return fn()
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower():
                    raise
                if time.monotonic() > deadline:
                    raise HubLockedError(
                        f"hub database locked for {self.lock_timeout_s:.0f}s: {exc}"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def upsert(
        self, tenant: str, events: pl.DataFrame, now: datetime | None = None
    ) -> UpsertResult:
        if events.is_empty():
            return UpsertResult()
        is_patch = pl.col("patch").is_not_null()
        full, patches = events.filter(~is_patch), events.filter(is_patch)
        with self._connect(tenant, read_only=False) as con:
            con.execute(_DDL)
            con.execute("BEGIN TRANSACTION")
            try:
                result = UpsertResult()
                if full.height:
                    candidates = reduce_batch(full)
                    merged = merge_records(candidates, self._existing(con, candidates), now)
                    self._write(con, merged.changed)
                    result += merged.result
                if patches.height:  # after the full upserts of the same batch
                    patched = apply_patches(self._existing(con, patches), patches, now)
                    self._write(con, patched.changed)
                    result += patched.result
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return result

    @staticmethod
    def _existing(con: duckdb.DuckDBPyConnection, keyed: pl.DataFrame) -> pl.DataFrame:
        keys = keyed.select("qualified_name").unique()  # noqa: F841 (read by DuckDB by name)
        found = con.sql("SELECT r.* FROM records r SEMI JOIN keys k USING (qualified_name)").pl()
        return found.cast(RECORD_SCHEMA)

    @staticmethod
    def _write(con: duckdb.DuckDBPyConnection, changed: pl.DataFrame) -> None:
        if changed.height:
            con.execute("INSERT OR REPLACE INTO records BY NAME SELECT * FROM changed")

    def _exists(self, tenant: str) -> bool:
        return self.path(tenant).exists()

    def records(self, tenant: str) -> pl.DataFrame:
        if not self._exists(tenant):
            return pl.DataFrame(schema=RECORD_SCHEMA)
        with self._connect(tenant, read_only=True) as con:
            frame = con.sql("SELECT * FROM records ORDER BY qualified_name").pl()
        return frame.cast(RECORD_SCHEMA)

    def export(self, tenant: str) -> Iterator[dict[str, Any]]:
        for row in self.records(tenant).iter_rows(named=True):
            yield record_to_export(row)

    def status_counts(self, tenant: str) -> dict[str, int]:
        frame = self.records(tenant)
        return {s: int(n) for s, n in frame.group_by("status").len().sort("status").iter_rows()}

    def tenants(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.duckdb"))
