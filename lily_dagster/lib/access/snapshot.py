"""A tenant's records held in memory by the access API, refreshed from the hub's store.

Why a snapshot: DuckDB lets one process write a database file or several read it, not
both. Reads answered from the file would hold off the Dagster run writing it (and wait for
it). Instead each tenant's records are read once, then only the records changed since the
snapshot's change-log position are read again, when the file changed on disk, in one short
read-only connection that never waits: if a writer holds the file, the request is answered
from the snapshot as it is, and the next request tries again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import polars as pl

from lily_dagster.lib.access.policy import Visibility
from lily_dagster.lib.hub.base import RECORD_SCHEMA
from lily_dagster.lib.hub.local import HubLockedError, LocalHub

# Above this share of changed records a refresh reads everything again.
_REREAD_SHARE = 0.3
# Visibility masks kept per snapshot (one per distinct set of caller groups; ~125 KB each
# per million records).
_MAX_MASKS = 64


class HubBusyError(RuntimeError):
    """The tenant's store stayed locked by a writer and there is no snapshot to answer from."""


@dataclass(frozen=True)
class Snapshot:
    """One tenant's records as users see them, sorted by qualified name, as of change-log
    position `seq`."""

    records: pl.DataFrame
    seq: int
    stamp: tuple[int, ...] = ()

    @cached_property
    def names(self) -> pl.Series:
        return self.records.get_column("qualified_name")

    @cached_property
    def edges(self) -> pl.DataFrame:
        """(process, input, output) for every input/output pair of every active Process."""
        processes = self.records.filter(
            (pl.col("status") == "ACTIVE")
            & (
                pl.col("inputs").list.len().fill_null(0) + pl.col("outputs").list.len().fill_null(0)
                > 0
            )
        ).select(
            pl.col("qualified_name").alias("process"),
            pl.col("inputs").alias("input"),
            pl.col("outputs").alias("output"),
        )
        return processes.explode("input").explode("output").drop_nulls()

    def row(self, qualified_name: str) -> dict[str, Any] | None:
        """The record of `qualified_name`, if there is one (binary search, not a scan)."""
        height = self.records.height
        at = int(self.names.search_sorted(qualified_name, side="left")) if height else 0
        if at >= height or self.names[at] != qualified_name:
            return None
        return self.records.row(at, named=True)

    def rows(self, names: list[str], columns: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """The records of those `names` that exist, by name (`columns` of them; all when
        None): one vectorised binary search for the lot, where `row` costs ~0.1 ms each."""
        height = self.records.height
        if not names or not height:
            return {}
        wanted = pl.Series("qualified_name", names, dtype=pl.String)
        at = self.names.search_sorted(wanted, side="left").clip(0, height - 1)
        found = (self.records if columns is None else self.records.select(columns))[at]
        return {
            name: row
            for name, row in zip(names, found.iter_rows(named=True), strict=True)
            if row["qualified_name"] == name
        }

    @cached_property
    def _masks(self) -> dict[Visibility, pl.Series]:
        return {}

    def visible(self, view: Visibility) -> pl.Series | None:
        """Which records `view` shows (None: all), computed once per snapshot and caller
        view: a page then filters its slice by the mask instead of evaluating the policies'
        regular expressions again (~1 ms a page)."""
        if view.expr is None:
            return None
        mask = self._masks.get(view)
        if mask is None:
            if len(self._masks) >= _MAX_MASKS:
                self._masks.clear()
            # with_columns, not select: a policy matching everything is a scalar, broadcast.
            shown = view.expr.fill_null(False).alias("__visible")
            mask = self.records.with_columns(shown).get_column("__visible")
            self._masks[view] = mask
        return mask

    @cached_property
    def lineage_index(self) -> dict[str, dict[str, list[tuple[str, str]]]]:
        """For each direction, each name's (process, next name) pairs: a walk's hop is then a
        lookup, not a scan of every edge."""
        index: dict[str, dict[str, list[tuple[str, str]]]] = {"downstream": {}, "upstream": {}}
        for process, source, target in self.edges.iter_rows():
            index["downstream"].setdefault(source, []).append((process, target))
            index["upstream"].setdefault(target, []).append((process, source))
        return index


def stamp_of(path: Path) -> tuple[int, ...]:
    """What changes on disk when a writer commits: the database's and its WAL's size and
    modification time (a stat, not a read)."""
    parts: list[int] = []
    for p in (path, path.with_name(path.name + ".wal")):
        try:
            st = p.stat()
            parts += [st.st_mtime_ns, st.st_size, st.st_ino]
        except FileNotFoundError:
            parts += [0, 0, 0]
    return tuple(parts)


class SnapshotStore:
    """The snapshots of the tenants read lately, refreshed on read when their file changed:
    at most `max_tenants`, the least recently read dropped first (read again when asked)."""

    def __init__(
        self, store: LocalHub, first_read_wait_s: float = 10.0, max_tenants: int = 64
    ) -> None:
        ciphers = store.ciphers  # the store's tenant keys open what they read
        self._quick = LocalHub(store.root, lock_timeout_s=0.0, ciphers=ciphers)  # never waits
        # First reads and change-log pages, which have nothing older to answer from.
        self.reader = LocalHub(store.root, lock_timeout_s=first_read_wait_s, ciphers=ciphers)
        self.max_tenants = max_tenants
        self._snapshots: OrderedDict[str, Snapshot] = OrderedDict()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def fresh(self, tenant: str) -> Snapshot | None:
        """The tenant's snapshot if its file has not changed since (a stat): what a request
        can use without reading anything."""
        current = self._snapshots.get(tenant)
        if current is not None and current.stamp == stamp_of(self._quick.path(tenant)):
            self._touch(tenant)
            return current
        return None

    def get(self, tenant: str) -> Snapshot:
        current = self._snapshots.get(tenant)
        stamp = stamp_of(self._quick.path(tenant))
        if current is not None and current.stamp == stamp:
            self._touch(tenant)
            return current
        lock = self._tenant_lock(tenant)
        if current is not None:
            if not lock.acquire(blocking=False):
                return current  # another request is refreshing it
            try:
                return self._refresh(tenant, current, stamp)
            finally:
                lock.release()
        with lock:
            current = self._snapshots.get(tenant)
            if current is not None:
                return current
            try:
                last, records = self.reader.changed_since(tenant, None)
            except HubLockedError as exc:
                raise HubBusyError(f"tenant {tenant!r}: {exc}") from None
            return self._keep(tenant, Snapshot(_sorted(records), last, stamp))

    def _refresh(self, tenant: str, current: Snapshot, stamp: tuple[int, ...]) -> Snapshot:
        try:
            last, changed = self._quick.changed_since(tenant, current.seq)
            if last < current.seq or changed.height > _REREAD_SHARE * max(
                current.records.height, 1
            ):
                last, changed = self._quick.changed_since(tenant, None)
                return self._keep(tenant, Snapshot(_sorted(changed), last, stamp))
        except HubLockedError:
            return current  # a writer holds the file: answer from what we have
        if changed.is_empty():
            return self._keep(tenant, Snapshot(current.records, last, stamp))
        names = changed.get_column("qualified_name")
        kept = current.records.filter(~pl.col("qualified_name").is_in(names.implode()))
        merged = kept.merge_sorted(_sorted(changed), key="qualified_name")
        return self._keep(tenant, Snapshot(merged, last, stamp))

    def _keep(self, tenant: str, snapshot: Snapshot) -> Snapshot:
        with self._guard:
            self._snapshots[tenant] = snapshot
            self._snapshots.move_to_end(tenant)
            while len(self._snapshots) > self.max_tenants:
                self._snapshots.popitem(last=False)
        return snapshot

    def _touch(self, tenant: str) -> None:
        with self._guard:
            if tenant in self._snapshots:
                self._snapshots.move_to_end(tenant)

    def held(self) -> list[str]:
        """The tenants whose snapshot is held, least recently read first."""
        return list(self._snapshots)

    def _tenant_lock(self, tenant: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(tenant, threading.Lock())


def _sorted(records: pl.DataFrame) -> pl.DataFrame:
    return records.cast(RECORD_SCHEMA).sort("qualified_name")  # type: ignore[arg-type]
