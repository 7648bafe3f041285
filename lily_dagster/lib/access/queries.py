"""The reads of the access API (CONTRACT.md §6) over a tenant's snapshot: a page of
records, one record, lineage, the change feed. Each takes the caller's `Visibility`: scans
filter with its expression inside the scan; point lookups ask it about the one record."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import polars as pl

from lily_dagster.lib.access.policy import Visibility
from lily_dagster.lib.access.redaction import sensitive
from lily_dagster.lib.access.snapshot import Snapshot
from lily_dagster.lib.hub.local import LocalHub
from lily_dagster.lib.times import iso_utc

# A listing scans the sorted records from its cursor in chunks, the first twice the page,
# growing to this size, until its page is full: a dense match reads little more than the
# page, a sparse one no more than it must, and nothing before the cursor (no OFFSET).
_LAST_CHUNK = 1 << 20
# Sorts after every continuation of a prefix (UTF-8 byte order).
_AFTER_ALL = "\U0010ffff"
Row = dict[str, Any]


@dataclass(frozen=True)
class AssetFilter:
    type_name: str | None = None
    status: str | None = None
    classification: str | None = None
    qualified_name_prefix: str | None = None
    q: str | None = None
    # A caller without the PII scope may not find a sensitive record by words of its
    # description, which it would see redacted.
    search_sensitive: bool = True

    def condition(self) -> pl.Expr | None:
        conditions: list[pl.Expr] = []
        if self.type_name is not None:
            conditions.append(pl.col("type_name") == self.type_name)
        if self.status is not None:
            conditions.append(pl.col("status") == self.status)
        if self.classification is not None:
            conditions.append(
                pl.col("classifications").fill_null([]).list.contains(self.classification)
            )
        if self.qualified_name_prefix:
            conditions.append(pl.col("qualified_name").str.starts_with(self.qualified_name_prefix))
        if self.q:
            needle = self.q.lower()
            in_description = (
                pl.col("description").str.to_lowercase().str.contains(needle, literal=True)
            ).fill_null(False)
            if not self.search_sensitive:
                in_description = in_description & ~sensitive()
            conditions.append(
                pl.col("name").str.to_lowercase().str.contains(needle, literal=True)
                | in_description
            )
        return pl.all_horizontal(conditions) if conditions else None


def shows(view: Visibility, row: Row) -> bool:
    return view.shows(row["qualified_name"], row["type_name"], row["classifications"])


def list_assets(
    snapshot: Snapshot, where: AssetFilter, view: Visibility, after: str | None, limit: int
) -> tuple[pl.DataFrame, bool]:
    """Up to `limit` visible records matching `where` after qualified name `after`, in
    qualified-name order, and whether more follow."""
    names, total = snapshot.names, snapshot.records.height
    start = 0 if after is None or not total else int(names.search_sorted(after, side="right"))
    end = total
    if where.qualified_name_prefix and total:  # a prefix is a range of the sorted names
        prefix = where.qualified_name_prefix
        start = max(start, int(names.search_sorted(prefix, side="left")))
        end = int(names.search_sorted(prefix + _AFTER_ALL, side="left"))
    condition, mask = where.condition(), snapshot.visible(view)
    pages: list[pl.DataFrame] = []
    found, position, chunk = 0, start, 2 * (limit + 1)
    while position < end and found <= limit:
        size = min(chunk, end - position)
        part = snapshot.records.slice(position, size)
        if mask is not None:
            part = part.filter(mask.slice(position, size))
        position += size
        if condition is not None:
            part = part.filter(condition)
        pages.append(part)
        found += part.height
        chunk = min(chunk * 4, _LAST_CHUNK)
    page = pl.concat(pages) if pages else snapshot.records.clear()
    return page.head(limit), page.height > limit


def get_asset(snapshot: Snapshot, qualified_name: str, view: Visibility) -> Row | None:
    """The record of `qualified_name` if it exists and is visible."""
    row = snapshot.row(qualified_name)
    return row if row is not None and shows(view, row) else None


Direction = Literal["upstream", "downstream"]


def lineage(
    snapshot: Snapshot, start: str, direction: Direction, depth: int, view: Visibility
) -> tuple[list[Row], list[dict[str, str]]] | None:
    """The visible records up to `depth` Process hops from `start` (itself included, and
    the processes crossed), and the edges crossed `{"process", "from", "to"}` in the
    direction data flows; None when `start` is not a visible record. A hidden record is
    neither shown nor crossed."""
    origin = get_asset(snapshot, start, view)
    if origin is None:
        return None
    hops = snapshot.lineage_index[direction]
    looked_up: dict[str, Row | None] = {}

    def look_up(names: set[str]) -> None:
        """The visible records of `names`, in one lookup (a hop's worth)."""
        new = sorted(names - looked_up.keys())
        found = snapshot.rows(new)
        for name in new:
            row = found.get(name)
            looked_up[name] = row if row is not None and shows(view, row) else None

    def visible(name: str) -> Row | None:
        return looked_up[name]

    nodes: dict[str, Row] = {start: origin}
    edges: set[tuple[str, str, str]] = set()
    frontier, visited = [start], {start}
    for _ in range(depth):
        reached: set[str] = set()
        look_up({n for name in frontier for pair in hops.get(name, ()) for n in pair})
        for name in frontier:
            for process, other in hops.get(name, ()):
                process_row, other_row = visible(process), visible(other)
                if process_row is None or other_row is None:
                    continue
                nodes.setdefault(process, process_row)
                nodes.setdefault(other, other_row)
                downstream = direction == "downstream"
                edges.add((process, name, other) if downstream else (process, other, name))
                reached.add(other)
        frontier = sorted(reached - visited)
        visited |= reached
        if not frontier:
            break
    crossed = [{"process": p, "from": i, "to": o} for p, i, o in sorted(edges)]
    return list(nodes.values()), crossed


def visible_names(snapshot: Snapshot, names: list[str], view: Visibility) -> set[str]:
    """Which of `names` (a Process's inputs and outputs) the caller may see: records it may
    see, and names of no record that the policies would not hide by name alone."""
    if view.unrestricted:
        return set(names)
    found = snapshot.rows(names, ["qualified_name", "type_name", "classifications"])
    return {
        name
        for name in names
        if (shows(view, found[name]) if name in found else view.shows(name, None, ()))
    }


def changes_page(
    store: LocalHub, tenant: str, since: int, limit: int, view: Visibility
) -> tuple[list[dict[str, Any]], int]:
    """The visible changes after position `since` among the next `limit`, and the position
    to ask from next (the last one read, shown or not)."""
    frame = store.changes(tenant, since, limit)
    next_since = int(frame.get_column("seq").max()) if frame.height else since  # type: ignore[arg-type]
    return [_change(row) for row in view.filter(frame).iter_rows(named=True)], next_since


def _change(row: dict[str, Any]) -> dict[str, Any]:
    changed_at: datetime | None = row["changed_at"]
    return {
        "seq": row["seq"],
        "qualified_name": row["qualified_name"],
        "type_name": row["type_name"],
        "change": row["change"],
        "version": row["version"],
        "name": row["name"],
        "status": row["status"],
        "attributes": json.loads(row["attributes"] or "{}"),
        "classifications": list(row["classifications"] or []),
        "changed_at": iso_utc(changed_at),
    }
