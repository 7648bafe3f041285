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
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import polars as pl

from lily_dagster.lib.envelope import (
    EVENT_SCHEMA,
    WELL_KNOWN_ATTRIBUTES,
    full_attributes,
    to_rejects,
)
from lily_dagster.lib.plugins import registry
from lily_dagster.lib.reasons import Reason
from lily_dagster.lib.times import iso_utc

if TYPE_CHECKING:
    from lily_dagster.lib.crypto.sealer import BulkSealer
    from lily_dagster.lib.gdpr.subject import Subject
    from lily_dagster.lib.hub.local import LocalHub
    from lily_dagster.settings import Settings

CONTENT_COLUMNS = (
    "type_name",
    "name",
    *WELL_KNOWN_ATTRIBUTES,
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

# What reconciliation compares between a source snapshot and a hub listing.
LISTING_COLUMNS = (
    "qualified_name",
    "type_name",
    "name",
    "status",
    "description",
    "owner_users",
    "owner_groups",
    "certificate_status",
    "classifications",
)


class HubUnavailableError(RuntimeError):
    """The hub could not be reached or kept failing (5xx, throttling) past its retries:
    nothing was lost, the batch stays pending, and a later attempt may succeed."""


SAMPLE_SIZE = 100
ACTIVE = "ACTIVE"
DELETED = "DELETED"


@dataclass(frozen=True)
class HubState:
    """A tenant's hub as an upsert left it: its records per status and its change log's head
    (what every materialisation of hub_records reports)."""

    status_counts: dict[str, int]
    last_change: int


@dataclass(frozen=True)
class UpsertResult:
    created: int = 0
    updated: int = 0
    archived: int = 0
    restored: int = 0
    unchanged: int = 0
    # Partial changes kept until their record arrives (or LILY_ORPHAN_WAIT_S passes).
    pending: int = 0
    # Events the hub refused (REJECT_SCHEMA), for the tenant's quarantine.
    rejects: pl.DataFrame | None = field(default=None, compare=False)
    # Backend figures worth showing (Atlan: requests sent, tags skipped), summed on add.
    details: dict[str, int] = field(default_factory=dict, compare=False)
    # Some of the records written, for the run's page: qualified_name, change, guid.
    sample: list[dict[str, str]] = field(default_factory=list, compare=False)
    # The hub after the upsert, where the backend read it in the same transaction (one
    # connection less per tenant and run than status_counts and last_change afterwards).
    state: HubState | None = field(default=None, compare=False)

    def __add__(self, other: UpsertResult) -> UpsertResult:
        frames = [r for r in (self.rejects, other.rejects) if r is not None and r.height]
        return UpsertResult(
            self.created + other.created,
            self.updated + other.updated,
            self.archived + other.archived,
            self.restored + other.restored,
            self.unchanged + other.unchanged,
            self.pending + other.pending,
            pl.concat(frames) if frames else None,
            {
                k: self.details.get(k, 0) + other.details.get(k, 0)
                for k in {*self.details, *other.details}
            },
            (self.sample + other.sample)[:SAMPLE_SIZE],
            other.state or self.state,
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
            "pending": self.pending,
        }


@dataclass(frozen=True)
class HubErasure:
    """What erasing a data subject did to (dry run: would do to) a tenant's hub."""

    # The records that held it as users see them: each has a new version, sent to the
    # targets as an `updated` change.
    records_changed: list[str] = field(default_factory=list)
    changes_scrubbed: int = 0  # change-log entries rewritten in place
    patches_scrubbed: int = 0  # stored partial changes rewritten in place

    @property
    def total(self) -> int:
        return len(self.records_changed) + self.changes_scrubbed + self.patches_scrubbed

    def as_dict(self) -> dict[str, int]:
        return {
            "records_changed": len(self.records_changed),
            "changes_scrubbed": self.changes_scrubbed,
            "patches_scrubbed": self.patches_scrubbed,
        }


def reduce_batch(events: pl.DataFrame) -> pl.DataFrame:
    """One candidate record per qualified_name from a batch of events (RECORD_SCHEMA less
    updated_at and version)."""
    is_upsert = (pl.col("op") == "upsert").alias("content_upsert")
    status = (
        pl.when(pl.col("op") == "delete").then(pl.lit(DELETED)).otherwise(pl.lit(ACTIVE))
    ).alias("status")
    content_source = [
        pl.col("event_time").alias("content_time"),
        pl.col("event_id").alias("content_id"),
    ]
    names = events.get_column("qualified_name")
    if names.n_unique() == names.len():  # a fifth of the cost of is_unique()
        # Bulk loads name each record once: no sort, no grouping (~1 s per 1M rows saved).
        return events.select(
            "qualified_name",
            status,
            "event_time",
            "event_id",
            *CONTENT_COLUMNS,
            is_upsert,
            *content_source,
        )
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
            *content_source,
        )
    )
    return latest.select(
        "qualified_name",
        status,
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
    # For the change log: qualified_name, change, changed (fields), before (JSON of the
    # previous values of the changed fields), of every written row whose content or
    # status changed.
    log: pl.DataFrame = field(default_factory=pl.DataFrame)


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
        # A record whose first state is deleted (known only by its delete, or created and
        # deleted within the batch) is archived: a target must not take it for live.
        pl.when(pl.col("__new") & (pl.col("status") == DELETED))
        .then(pl.lit("archived"))
        .when(pl.col("__new"))
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
    # Counted as records created, whatever their first change says.
    counts = dict(
        merged.group_by(pl.when(pl.col("__new")).then(pl.lit("created")).otherwise("change"))
        .len()
        .iter_rows()
    )
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
    compared = ("status", *CONTENT_COLUMNS)
    differs = {c: ~pl.col(c).eq_missing(pl.col(f"{c}__old")) for c in compared}
    log = changed.filter(pl.col("change") != "unchanged").select(
        "qualified_name",
        "change",
        pl.when(pl.col("__new"))
        .then(pl.lit([], dtype=pl.List(pl.String)))
        .otherwise(
            pl.concat_list(
                [pl.when(d).then(pl.lit(c)) for c, d in differs.items()]
            ).list.drop_nulls()
        )
        .alias("changed"),
        pl.when(pl.col("__new"))
        .then(pl.lit(None, dtype=pl.String))
        .otherwise(pl.struct([pl.col(f"{c}__old").alias(c) for c in compared]).struct.json_encode())
        .alias("before"),
    )
    return MergeResult(
        changed.select(list(RECORD_SCHEMA)).cast(RECORD_SCHEMA),  # type: ignore[arg-type]
        result,
        log,
    )


PATCH_SCHEMA: dict[str, pl.DataType] = {
    "qualified_name": pl.String(),
    "event_id": pl.String(),
    "event_time": pl.Datetime("us", "UTC"),
    "patch": pl.String(),
    "raw": pl.String(),
    "origin": pl.String(),
    "stored_at": pl.Datetime("us", "UTC"),
}


def patch_rows(events: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """The partial-change events of a batch as rows of the hub's patch store."""
    return events.select(
        "qualified_name",
        "event_id",
        "event_time",
        "patch",
        "raw",
        "origin",
        pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("stored_at"),
    ).unique(["qualified_name", "event_id"], keep="first")


def patch_fields(patch: dict[str, Any]) -> set[str]:
    """The record fields a partial change touches."""
    fields = {k if k in WELL_KNOWN_ATTRIBUTES else "attributes" for k in patch.get("set", {})}
    if patch.get("add_classifications") or patch.get("remove_classifications"):
        fields.add("classifications")
    return fields


def apply_patch(record: dict[str, Any], patch: dict[str, Any]) -> None:
    """Apply one partial change to a record dict (RECORD_SCHEMA keys), in place."""
    extras = json.loads(record["attributes"] or "{}")
    for key, value in patch.get("set", {}).items():
        if key in WELL_KNOWN_ATTRIBUTES:
            record[key] = value
        else:
            extras[key] = value
    record["attributes"] = json.dumps(extras, sort_keys=True, separators=(",", ":"))
    removed = set(patch.get("remove_classifications", []))
    tags = [t for t in record["classifications"] or [] if t not in removed]
    for tag in patch.get("add_classifications", []):
        if tag not in tags:
            tags.append(tag)
    record["classifications"] = tags


def effective_records(records: pl.DataFrame, patches: pl.DataFrame) -> pl.DataFrame:
    """Records as users see them: each record's base content (its latest full upsert, or
    delete) with every stored patch newer than that base applied in (event_time, event_id)
    order, and event_time/event_id of its latest event of any kind.

    The base and the set of patches are both functions of the events received, so the view
    is the same whatever order the events arrived in (CONTRACT.md §1).
    """
    if patches.is_empty() or records.is_empty():
        return records
    relevant = patches.join(records.select("qualified_name"), on="qualified_name", how="semi")
    if relevant.is_empty():
        return records
    by_name: dict[str, list[dict[str, Any]]] = {}
    for p in relevant.sort(["event_time", "event_id"]).iter_rows(named=True):
        by_name.setdefault(p["qualified_name"], []).append(p)
    touched = records.filter(pl.col("qualified_name").is_in(list(by_name)))
    rows = []
    for rec in touched.iter_rows(named=True):
        for p in by_name[rec["qualified_name"]]:
            when = (p["event_time"], p["event_id"])
            if when > (rec["content_time"], rec["content_id"]):
                apply_patch(rec, json.loads(p["patch"]))
            if when > (rec["event_time"], rec["event_id"]):
                rec["event_time"], rec["event_id"] = when
        rows.append(rec)
    patched = pl.DataFrame(rows, schema=RECORD_SCHEMA)
    rest = records.filter(~pl.col("qualified_name").is_in(list(by_name)))
    return pl.concat([rest, patched.select(records.columns)]).sort("qualified_name")


def orphan_rejects(orphans: pl.DataFrame, wait_s: float) -> pl.DataFrame:
    """Patches that waited `wait_s` for a record that never came, for the quarantine."""
    return to_rejects(
        orphans.select(
            "event_id",
            pl.lit(Reason.ORPHAN.value).alias("reason"),
            pl.format(
                "no record {} arrived within {} s of this partial change",
                pl.col("qualified_name"),
                pl.lit(int(wait_s)),
            ).alias("detail"),
            "raw",
            "origin",
        ),
        None,
    )


def record_to_export(row: dict[str, Any]) -> dict[str, Any]:
    """A stored record as the hub export record of CONTRACT.md §2."""
    return _export(row, iso_utc(row["event_time"]), iso_utc(row["updated_at"]))


def records_to_export(records: pl.DataFrame) -> list[dict[str, Any]]:
    """`record_to_export` of every row, read column-wise with the timestamps formatted by
    polars: a third of its time for a page of records (the access API's listings)."""
    times = [_iso_expr(c).alias(f"{c}_iso") for c in ("event_time", "updated_at")]
    columns = records.with_columns(times).to_dict(as_series=False)
    keys = list(columns)
    rows = (dict(zip(keys, values, strict=True)) for values in zip(*columns.values(), strict=True))
    return [_export(row, row["event_time_iso"], row["updated_at_iso"]) for row in rows]


def _export(row: dict[str, Any], event_time: str | None, updated_at: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "qualified_name": row["qualified_name"],
        "type_name": row["type_name"],
        "name": row["name"],
        "status": row["status"],
        "attributes": full_attributes(row),
        "classifications": list(row["classifications"] or []),
        "event_time": event_time,
        "event_id": row["event_id"],
        "updated_at": updated_at,
    }
    if row["type_name"] == "Process" or row["inputs"] or row["outputs"]:
        out["inputs"] = list(row["inputs"] or [])
        out["outputs"] = list(row["outputs"] or [])
    return out


def _iso_expr(column: str) -> pl.Expr:
    """`iso_utc` of a column: microseconds only when not zero, as Python's isoformat."""
    moment = pl.col(column).dt.convert_time_zone("UTC")
    return (
        pl.when(moment.dt.microsecond() == 0)
        .then(moment.dt.to_string("%Y-%m-%dT%H:%M:%SZ"))
        .otherwise(moment.dt.to_string("%Y-%m-%dT%H:%M:%S%.6fZ"))
    )


class RecordReads:
    """`export` and `status_counts` of a hub, from its `records`."""

    def records(self, tenant: str) -> pl.DataFrame:
        raise NotImplementedError

    def export(self, tenant: str) -> Iterator[dict[str, Any]]:
        for row in self.records(tenant).iter_rows(named=True):
            yield record_to_export(row)

    def status_counts(self, tenant: str) -> dict[str, int]:
        frame = self.records(tenant)
        return {s: int(n) for s, n in frame.group_by("status").len().sort("status").iter_rows()}


class MetadataHub(Protocol):
    """Where records end up: the embedded LocalHub or Atlan."""

    name: str

    def upsert(
        self,
        tenant: str,
        events: pl.DataFrame,
        now: datetime | None = None,
        checkpoint: tuple[str, int] | None = None,
        sealed_ahead: pl.DataFrame | None = None,
    ) -> UpsertResult:
        """Apply a batch of valid, enriched events (EVENT_SCHEMA) to the tenant's records;
        `checkpoint` (key, value) is recorded atomically with them; `sealed_ahead` is what
        `bulk_sealer` made of these events."""
        ...

    def bulk_sealer(self, tenant: str) -> BulkSealer:
        """What seals a bulk load's batches as this hub stores them at rest, ahead of their
        upserts (`sealed_ahead`), while earlier batches are written."""
        ...

    def checkpoint(self, tenant: str, key: str) -> int | None:
        """The value last recorded under `key` by an upsert (None: never)."""
        ...

    def checkpoints(self, tenant: str, prefix: str) -> dict[str, int]:
        """Every value recorded by an upsert under a key starting with `prefix`."""
        ...

    def export(self, tenant: str) -> Iterator[dict[str, Any]]:
        """Every record of the tenant as CONTRACT.md §2 hub export records."""
        ...

    def status_counts(self, tenant: str) -> dict[str, int]:
        """How many records per status."""
        ...

    def contains(self, tenant: str, qualified_names: list[str]) -> set[str]:
        """Which of these qualified names the tenant's hub holds."""
        ...

    def records(self, tenant: str) -> pl.DataFrame:
        """Every record of the tenant as users see it (RECORD_SCHEMA)."""
        ...

    def read_store(self) -> LocalHub:
        """Where Lily keeps what it wrote to this hub, read by the access API (CONTRACT.md
        §6) instead of the hub itself: the embedded store, or the Atlan hub's ledger."""
        ...

    def listing(self, tenant: str) -> pl.DataFrame:
        """What the hub itself holds for the tenant (LISTING_COLUMNS of RECORD_SCHEMA), read
        from the hub's own store: for Atlan, its search index, so reconciliation sees edits
        made there by hand."""
        ...

    def resync(self, tenant: str, qualified_names: list[str]) -> int:
        """Write the records of these names again as Lily holds them (repairing drift in the
        hub's own store); how many were written. A no-op where Lily's store is the hub."""
        ...

    def changes(self, tenant: str, after_seq: int, limit: int) -> pl.DataFrame:
        """Up to `limit` entries of the tenant's change log after `after_seq`, in order
        (changelog.CHANGE_SCHEMA)."""
        ...

    def last_change(self, tenant: str) -> int:
        """The position of the tenant's latest change (0: none)."""
        ...

    def erase_subject(self, tenant: str, subject: Subject, dry_run: bool = False) -> HubErasure:
        """Remove a data subject from the tenant's records (a new version of each, sent to
        the targets as `updated`), change log and partial changes, atomically; dry_run
        counts only. A second call finds nothing."""
        ...


class HubBackend(Protocol):
    """A hub class: built from Lily's settings."""

    def __call__(self, *args: Any, **kwargs: Any) -> MetadataHub: ...

    def from_settings(self, settings: Settings) -> MetadataHub: ...


# Hub backends are classes (LILY_HUB=<name>), each in a module of lily_dagster.lib.hub or a
# third-party package registering through the `lily_dagster.hubs` entry point group.
_REGISTRY = registry("hub", "lily_dagster.lib.hub", "lily_dagster.hubs", instantiate=False)
register_hub = _REGISTRY.register


def hub_factory(name: str) -> HubBackend:
    """The hub class registered as `name`; ConfigError naming the known ones."""
    backend: HubBackend = _REGISTRY.get(name)
    return backend
