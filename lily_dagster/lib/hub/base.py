"""The hub interface every backend implements, and the contract's merge semantics.

`merge_records` is the one implementation of CONTRACT.md §1's rules, in polars: the record's
status, event_time and event_id come from its latest event by (event_time, event_id); its
content (type, name, attributes, classifications, lineage) from its latest *upsert*, or from
its latest delete when no upsert was ever seen, i.e. the greatest
(is_upsert, event_time, event_id). Both are functions of the set of events, so applying
events in any order, any number of times, gives the same state.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import polars as pl

from lily_dagster.lib.envelope import (
    EVENT_SCHEMA,
    WELL_KNOWN_ATTRIBUTES,
    full_attributes,
    to_rejects,
)
from lily_dagster.lib.reasons import Reason

CONTENT_COLUMNS = (
    "type_name",
    "name",
    "description",
    "owner_users",
    "owner_groups",
    "certificate_status",
    "parent_qualified_name",
    "attributes",
    "classifications",
    "inputs",
    "outputs",
)

RECORD_SCHEMA: dict[str, pl.DataType] = {
    "qualified_name": pl.String(),
    "status": pl.String(),
    **{c: EVENT_SCHEMA[c] for c in CONTENT_COLUMNS},
    # the event the content comes from: the latest upsert, else the latest delete
    "content_upsert": pl.Boolean(),
    "content_time": pl.Datetime("us", "UTC"),
    "content_id": pl.String(),
    "event_time": pl.Datetime("us", "UTC"),
    "event_id": pl.String(),
    "updated_at": pl.Datetime("us", "UTC"),
    "version": pl.Int64(),
}

ACTIVE = "ACTIVE"
DELETED = "DELETED"


@dataclass(frozen=True)
class UpsertResult:
    created: int = 0
    updated: int = 0
    archived: int = 0
    restored: int = 0
    unchanged: int = 0
    # Events the hub refused (REJECT_SCHEMA), for the tenant's quarantine.
    rejects: pl.DataFrame | None = field(default=None, compare=False)

    def __add__(self, other: UpsertResult) -> UpsertResult:
        frames = [r for r in (self.rejects, other.rejects) if r is not None and r.height]
        return UpsertResult(
            self.created + other.created,
            self.updated + other.updated,
            self.archived + other.archived,
            self.restored + other.restored,
            self.unchanged + other.unchanged,
            pl.concat(frames) if frames else None,
        )

    @property
    def changed(self) -> int:
        return self.created + self.updated + self.archived + self.restored

    def as_dict(self) -> dict[str, int]:
        return {
            "created": self.created,
            "updated": self.updated,
            "archived": self.archived,
            "restored": self.restored,
            "unchanged": self.unchanged,
        }


def reduce_batch(events: pl.DataFrame) -> pl.DataFrame:
    """One candidate record per qualified_name from a batch of events (RECORD_SCHEMA less
    updated_at and version)."""
    is_upsert = (pl.col("op") == "upsert").alias("content_upsert")
    latest = events.sort(["event_time", "event_id"]).group_by("qualified_name").last()
    content = (
        events.with_columns(is_upsert)
        .sort(["content_upsert", "event_time", "event_id"])
        .group_by("qualified_name")
        .last()
        .select(
            "qualified_name",
            *CONTENT_COLUMNS,
            "content_upsert",
            pl.col("event_time").alias("content_time"),
            pl.col("event_id").alias("content_id"),
        )
    )
    return latest.select(
        "qualified_name",
        pl.when(pl.col("op") == "delete")
        .then(pl.lit(DELETED))
        .otherwise(pl.lit(ACTIVE))
        .alias("status"),
        "event_time",
        "event_id",
    ).join(content, on="qualified_name", how="inner")


def _newer(time_a: str, id_a: str, time_b: str, id_b: str) -> pl.Expr:
    """(a_time, a_id) > (b_time, b_id)."""
    a_t, a_i, b_t, b_i = pl.col(time_a), pl.col(id_a), pl.col(time_b), pl.col(id_b)
    return (a_t > b_t) | ((a_t == b_t) & (a_i > b_i))


@dataclass(frozen=True)
class MergeResult:
    changed: pl.DataFrame  # RECORD_SCHEMA rows to write
    result: UpsertResult


def merge_records(
    candidates: pl.DataFrame, existing: pl.DataFrame, now: datetime | None = None
) -> MergeResult:
    """Merge batch candidates (from `reduce_batch`) into the existing rows of the same keys."""
    now = now or datetime.now(UTC)
    old = existing.select(
        "qualified_name",
        *[pl.col(c).alias(f"{c}__old") for c in existing.columns if c != "qualified_name"],
    )
    m = candidates.join(old, on="qualified_name", how="left").with_columns(
        pl.col("event_time__old").is_null().alias("__new"),
    )
    m = m.with_columns(
        (
            pl.col("__new") | _newer("event_time", "event_id", "event_time__old", "event_id__old")
        ).alias("__status_wins"),
        (
            pl.col("__new")
            | (pl.col("content_upsert") & ~pl.col("content_upsert__old"))
            | (
                (pl.col("content_upsert") == pl.col("content_upsert__old"))
                & _newer("content_time", "content_id", "content_time__old", "content_id__old")
            )
        ).alias("__content_wins"),
    )
    take_content = pl.col("__content_wins")
    take_status = pl.col("__status_wins")
    merged = m.with_columns(
        *[
            pl.when(take_content).then(pl.col(c)).otherwise(pl.col(f"{c}__old")).alias(c)
            for c in CONTENT_COLUMNS
        ],
        *[
            pl.when(take_content).then(pl.col(c)).otherwise(pl.col(f"{c}__old")).alias(c)
            for c in ("content_upsert", "content_time", "content_id")
        ],
        *[
            pl.when(take_status).then(pl.col(c)).otherwise(pl.col(f"{c}__old")).alias(c)
            for c in ("status", "event_time", "event_id")
        ],
    )
    content_differs = pl.any_horizontal(
        [~pl.col(c).eq_missing(pl.col(f"{c}__old")) for c in CONTENT_COLUMNS]
    )
    merged = merged.with_columns(
        (take_content | take_status).alias("__write"),
        pl.when(pl.col("__new"))
        .then(pl.lit("created"))
        .when((pl.col("status__old") == ACTIVE) & (pl.col("status") == DELETED))
        .then(pl.lit("archived"))
        .when((pl.col("status__old") == DELETED) & (pl.col("status") == ACTIVE))
        .then(pl.lit("restored"))
        .when(content_differs)
        .then(pl.lit("updated"))
        .otherwise(pl.lit("unchanged"))
        .alias("change"),
    )
    counts = dict(merged.group_by("change").len().iter_rows())
    changed = merged.filter(pl.col("__write")).with_columns(
        pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("updated_at"),
        (pl.col("version__old").fill_null(0) + 1).alias("version"),
    )
    result = UpsertResult(
        created=counts.get("created", 0),
        updated=counts.get("updated", 0),
        archived=counts.get("archived", 0),
        restored=counts.get("restored", 0),
        unchanged=counts.get("unchanged", 0),
    )
    return MergeResult(changed.select(list(RECORD_SCHEMA)).cast(RECORD_SCHEMA), result)  # type: ignore[arg-type]


def apply_patches(
    current: pl.DataFrame, patches: pl.DataFrame, now: datetime | None = None
) -> MergeResult:
    """Apply partial changes (events with a `patch`) to the current records of their keys.

    A patch newer than the record's content changes only what it names and becomes the
    content's latest event; an older one is superseded. A patch for a record the hub does not
    hold is refused as `unknown_asset` (it cannot say what type or name the record has).
    """
    now = now or datetime.now(UTC)
    records = {r["qualified_name"]: r for r in current.iter_rows(named=True)}
    touched: dict[str, str] = {}
    refused: list[dict[str, Any]] = []
    unchanged = 0
    for p in patches.sort(["event_time", "event_id"]).iter_rows(named=True):
        rec = records.get(p["qualified_name"])
        if rec is None:
            refused.append(p)
            continue
        if (p["event_time"], p["event_id"]) <= (rec["content_time"], rec["content_id"]):
            unchanged += 1
            continue
        patch = json.loads(p["patch"])
        before = {c: rec[c] for c in CONTENT_COLUMNS}
        extras = json.loads(rec["attributes"] or "{}")
        for key, value in patch.get("set", {}).items():
            if key in WELL_KNOWN_ATTRIBUTES:
                rec[key] = value
            else:
                extras[key] = value
        rec["attributes"] = json.dumps(extras, sort_keys=True, separators=(",", ":"))
        tags = [
            t
            for t in rec["classifications"] or []
            if t not in patch.get("remove_classifications", [])
        ]
        for tag in patch.get("add_classifications", []):
            if tag not in tags:
                tags.append(tag)
        rec["classifications"] = tags
        rec.update(content_upsert=True, content_time=p["event_time"], content_id=p["event_id"])
        if (p["event_time"], p["event_id"]) > (rec["event_time"], rec["event_id"]):
            rec.update(event_time=p["event_time"], event_id=p["event_id"])
        rec.update(updated_at=now, version=rec["version"] + 1)
        changed = any(before[c] != rec[c] for c in CONTENT_COLUMNS)
        touched[rec["qualified_name"]] = (
            "updated" if changed else touched.get(rec["qualified_name"], "unchanged")
        )
    counts = {"updated": 0, "unchanged": unchanged}
    for change in touched.values():
        counts[change] += 1
    rows = [records[qn] for qn in touched]
    changed_frame = (
        pl.DataFrame(rows, schema=RECORD_SCHEMA) if rows else pl.DataFrame(schema=RECORD_SCHEMA)
    )
    rejects = None
    if refused:
        rejects = to_rejects(
            pl.DataFrame(
                {
                    "event_id": [p["event_id"] for p in refused],
                    "reason": [Reason.UNKNOWN_ASSET.value] * len(refused),
                    "detail": [
                        f"patch for {p['qualified_name']!r}, which the hub does not hold"
                        for p in refused
                    ],
                    "raw": [p["raw"] for p in refused],
                    "origin": [p["origin"] for p in refused],
                }
            ),
            None,
        )
    return MergeResult(
        changed_frame,
        UpsertResult(updated=counts["updated"], unchanged=counts["unchanged"], rejects=rejects),
    )


def record_to_export(row: dict[str, Any]) -> dict[str, Any]:
    """A stored record as the hub export record of CONTRACT.md §2."""
    attributes = full_attributes(row)
    out: dict[str, Any] = {
        "qualified_name": row["qualified_name"],
        "type_name": row["type_name"],
        "name": row["name"],
        "status": row["status"],
        "attributes": attributes,
        "classifications": list(row["classifications"] or []),
        "event_time": _iso(row["event_time"]),
        "event_id": row["event_id"],
        "updated_at": _iso(row["updated_at"]),
    }
    if row["type_name"] == "Process" or row["inputs"] or row["outputs"]:
        out["inputs"] = list(row["inputs"] or [])
        out["outputs"] = list(row["outputs"] or [])
    return out


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class MetadataHub(Protocol):
    """Where records end up: the embedded LocalHub or Atlan."""

    name: str

    def upsert(self, tenant: str, events: pl.DataFrame) -> UpsertResult:
        """Apply a batch of valid, enriched events (EVENT_SCHEMA) to the tenant's records."""
        ...

    def export(self, tenant: str) -> Iterator[dict[str, Any]]:
        """Every record of the tenant as CONTRACT.md §2 hub export records."""
        ...

    def status_counts(self, tenant: str) -> dict[str, int]:
        """How many records per status."""
        ...


HubFactory = Callable[..., MetadataHub]
_HUBS: dict[str, HubFactory] = {}


def register_hub(name: str) -> Callable[[HubFactory], HubFactory]:
    """Register a hub backend under the LILY_HUB name it is selected by."""

    def decorate(factory: HubFactory) -> HubFactory:
        _HUBS[name] = factory
        return factory

    return decorate


def hub_factory(name: str) -> HubFactory:
    try:
        return _HUBS[name]
    except KeyError:
        raise ValueError(f"no hub backend named {name!r}; known: {sorted(_HUBS)}") from None
