"""Reconciliation: make a tenant's hub equal to a source snapshot without ever wiping live
assets on a bad day.

Pure functions on polars frames do the work: `diff` compares the snapshot's records with the
hub's listing, `plan` applies the fail-safes to what would be archived, `to_events` turns the
plan into events for `MetadataHub.upsert`, `summary_markdown` reports it. `reconcile` runs
them for one tenant; the `reconciliation` asset is a thin wrapper around it.

Upserts keep their snapshot event_time, so a newer live event already in the hub wins (the
snapshot is older news). Archives are deletes stamped with the snapshot's time, with ids
`reconcile:<snapshot id>:<qualified name>`: re-running the same snapshot writes the same
events, which the hub's merge makes a no-op.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import polars as pl

from lily_dagster.lib.envelope import EVENT_SCHEMA, frame_to_envelopes
from lily_dagster.lib.hooks import HookContext, run_chain, tenant_chain
from lily_dagster.lib.hub.base import (
    ACTIVE,
    LISTING_COLUMNS,
    RECORD_SCHEMA,
    MetadataHub,
    UpsertResult,
    reduce_batch,
)
from lily_dagster.lib.inventory import Snapshot, read_snapshot, resolve_source
from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster.settings import (
    DEFAULT_MAX_ARCHIVE_SHARE,
    ConfigError,
    LilyConfigFile,
    ReconciliationConfig,
    Settings,
)

RECONCILIATION_SOURCE = "lily:reconciliation"
SAMPLE_NAMES = 20
COMPARED = tuple(c for c in LISTING_COLUMNS if c != "qualified_name")
_LIST_COLUMNS = tuple(c for c in COMPARED if isinstance(RECORD_SCHEMA[c], pl.List))
_LISTING_SCHEMA = {c: RECORD_SCHEMA[c] for c in LISTING_COLUMNS}


def reconciled_tenants(config: LilyConfigFile) -> list[str]:
    """The tenants whose LILY_CONFIG entry has `reconciliation`."""
    return [t.name for t in config.tenants if t.reconciliation is not None]


def reconciliation_config(config: LilyConfigFile, tenant: str) -> ReconciliationConfig:
    own = config.tenant(tenant)
    if own is None or own.reconciliation is None:
        raise ConfigError(
            f"tenant {tenant!r} has no reconciliation in LILY_CONFIG "
            "(tenants[].reconciliation.source; README: Reconciliation)"
        )
    return own.reconciliation


# --- the snapshot as records -------------------------------------------------------------


@dataclass(frozen=True)
class SourceState:
    records: pl.DataFrame  # one per qualified_name, as the hub would hold them (reduce_batch)
    # Names the snapshot refers to without their own record (lineage ends, partial
    # changes): never stale.
    referenced: list[str]
    # Partial changes (lily_patch) are not inventory: left out of the comparison and of the
    # apply; the live path carries them.
    partial_changes: int


def source_state(events: pl.DataFrame) -> SourceState:
    """The valid, enriched snapshot events reduced to the records they make."""
    is_patch = pl.col("patch").is_not_null()
    full, partial = events.filter(~is_patch), events.filter(is_patch)
    records = reduce_batch(full) if full.height else pl.DataFrame(schema=RECORD_SCHEMA)
    ends = records.select(pl.concat_list(pl.col("inputs"), pl.col("outputs")).alias("n"))
    referenced = set(ends.explode("n").get_column("n").drop_nulls().to_list())
    referenced |= set(partial.get_column("qualified_name").to_list())
    return SourceState(records, sorted(referenced), partial.height)


# --- diff --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReconciliationDiff:
    missing: pl.DataFrame  # LISTING_COLUMNS of snapshot records the hub does not hold
    changed: pl.DataFrame  # qualified_name, type_name, name, differs (the columns that differ)
    stale: pl.DataFrame  # LISTING_COLUMNS of live hub records in scope the snapshot lacks
    unchanged: pl.DataFrame  # qualified_name
    scope: tuple[str, ...]  # qualified-name prefixes within which records can be stale
    live_in_scope: int  # ACTIVE hub records within the scope
    snapshot_records: int

    @property
    def counts(self) -> dict[str, int]:
        return {
            "missing": self.missing.height,
            "changed": self.changed.height,
            "stale": self.stale.height,
            "unchanged": self.unchanged.height,
        }

    @property
    def upsert_names(self) -> list[str]:
        """Records the snapshot's events should be applied to: missing and changed ones."""
        names = pl.concat(
            [self.missing.get_column("qualified_name"), self.changed.get_column("qualified_name")]
        )
        return sorted(names.to_list())


def _normalised(frame: pl.DataFrame) -> pl.DataFrame:
    """LISTING_COLUMNS, lists as sorted sets with null as []: an owner list's order, its
    duplicates or its absence is no difference between a source and a hub."""
    listing = frame.select(LISTING_COLUMNS).cast(_LISTING_SCHEMA)  # type: ignore[arg-type]
    empty = pl.lit([], dtype=pl.List(pl.String()))
    return listing.with_columns(
        pl.when(pl.col(c).is_null())
        .then(empty)
        .otherwise(pl.col(c).list.unique().list.sort())
        .alias(c)
        for c in _LIST_COLUMNS
    )


def connection_prefixes(qualified_names: Sequence[str] | pl.Series) -> list[str]:
    """The connections (`default/<connector>/<epoch>`) of Atlan qualified names."""
    names = pl.Series("n", qualified_names, dtype=pl.String())
    parts = names.filter(names.str.starts_with("default/")).str.split("/")
    connections = parts.filter(parts.list.len() >= 3).list.slice(0, 3).list.join("/")
    return sorted(connections.unique().to_list())


def _in_scope(prefixes: Sequence[str]) -> pl.Expr:
    qn = pl.col("qualified_name")
    if not prefixes:
        return pl.lit(False)
    return pl.any_horizontal([(qn == p) | qn.str.starts_with(p + "/") for p in prefixes])


def diff(
    source: pl.DataFrame,
    listing: pl.DataFrame,
    scope_prefixes: Sequence[str] = (),
    referenced: Collection[str] = (),
) -> ReconciliationDiff:
    """Compare the snapshot's records (one per qualified_name, LISTING_COLUMNS at least) with
    the hub's listing.

    Missing: in the snapshot, not in the hub. Changed: in both, some LISTING_COLUMN differs
    (status included). Stale: ACTIVE in the hub, within the scope, and neither in the snapshot
    nor `referenced` by it. The scope is `scope_prefixes`, else the connections the snapshot
    names: a snapshot of one Snowflake connection says nothing about a dbt project.
    """
    src = _normalised(source)
    hub = _normalised(listing)
    scope = tuple(p.rstrip("/") for p in scope_prefixes) or tuple(
        connection_prefixes(src.get_column("qualified_name"))
    )
    joined = src.join(hub, on="qualified_name", how="left", suffix="__hub")
    in_hub = pl.col("status__hub").is_not_null()
    differs = (
        pl.concat_list(
            pl.when(~pl.col(c).eq_missing(pl.col(f"{c}__hub")))
            .then(pl.lit(c))
            .otherwise(pl.lit(None, dtype=pl.String()))
            for c in COMPARED
        )
        .list.drop_nulls()
        .alias("differs")
    )
    compared = joined.filter(in_hub).with_columns(differs)
    is_changed = pl.col("differs").list.len() > 0
    live = hub.filter((pl.col("status") == ACTIVE) & _in_scope(scope))
    present = pl.concat(
        [
            src.select("qualified_name"),
            pl.DataFrame(
                {"qualified_name": list(referenced)}, schema={"qualified_name": pl.String}
            ),
        ]
    )
    return ReconciliationDiff(
        missing=joined.filter(~in_hub).select(LISTING_COLUMNS).sort("qualified_name"),
        changed=compared.filter(is_changed)
        .select("qualified_name", "type_name", "name", "differs")
        .sort("qualified_name"),
        stale=live.join(present, on="qualified_name", how="anti")
        .select(LISTING_COLUMNS)
        .sort("qualified_name"),
        unchanged=compared.filter(~is_changed).select("qualified_name"),
        scope=scope,
        live_in_scope=live.height,
        snapshot_records=src.height,
    )


# --- plan: the fail-safes ----------------------------------------------------------------


@dataclass(frozen=True)
class ReconciliationPlan:
    upsert_names: list[str]  # missing and changed records: their snapshot events are applied
    archive: pl.DataFrame  # the stale records to archive: all of them, or none when refused
    archive_refused: bool
    refusal_reason: str  # why archiving was refused; "" when it was not
    stale_share: float  # stale / live in-scope hub records
    max_archive_share: float
    dry_run: bool


def plan(
    diff: ReconciliationDiff,
    snapshot_ok: bool,
    max_archive_share: float = DEFAULT_MAX_ARCHIVE_SHARE,
    dry_run: bool = False,
    snapshot_problem: str = "the source snapshot failed its checks",
) -> ReconciliationPlan:
    """What may be applied. Upserts always (they only add or refresh); archives only when
    the snapshot passed its checks (`snapshot_ok`; `snapshot_problem` says why not), is not
    empty, and would archive at most `max_archive_share` of the live records in scope: a
    truncated export must not look like a mass deletion."""
    if not 0 < max_archive_share <= 1:
        raise ValueError(f"max_archive_share must be in (0, 1], got {max_archive_share}")
    stale, live = diff.stale.height, diff.live_in_scope
    share = stale / live if live else 0.0
    if not snapshot_ok:
        reason = snapshot_problem
    elif diff.snapshot_records == 0:
        reason = "the source snapshot is empty"
    elif share > max_archive_share:
        reason = (
            f"{stale} of {live} live records in scope ({share:.1%}) would be archived, "
            f"more than max_archive_share {max_archive_share:.1%}"
        )
    else:
        reason = ""
    return ReconciliationPlan(
        upsert_names=diff.upsert_names,
        archive=diff.stale.clear() if reason else diff.stale,
        archive_refused=bool(reason),
        refusal_reason=reason,
        stale_share=share,
        max_archive_share=max_archive_share,
        dry_run=dry_run,
    )


@dataclass(frozen=True)
class ReconciliationEvents:
    upserts: pl.DataFrame  # EVENT_SCHEMA: the snapshot's own events of missing/changed records
    archives: pl.DataFrame  # EVENT_SCHEMA: deletes of the stale records


def to_events(
    plan: ReconciliationPlan,
    snapshot_events: pl.DataFrame,
    *,
    tenant: str,
    snapshot_id: str,
    snapshot_time: datetime,
) -> ReconciliationEvents:
    """The events that carry out `plan` (whether or not it is a dry run)."""
    upserts = snapshot_events.filter(
        pl.col("patch").is_null() & pl.col("qualified_name").is_in(plan.upsert_names)
    ).select(list(EVENT_SCHEMA))
    given = {
        "event_id": pl.format("reconcile:{}:{}", pl.lit(snapshot_id), pl.col("qualified_name")),
        "tenant": pl.lit(tenant),
        "source": pl.lit(RECONCILIATION_SOURCE),
        "op": pl.lit("delete"),
        # The snapshot's time: a live event newer than the snapshot keeps its record.
        "event_time": pl.lit(snapshot_time),
        "type_name": pl.col("type_name"),
        "qualified_name": pl.col("qualified_name"),
        "name": pl.col("name"),
        "attributes": pl.lit("{}"),
        **{
            c: pl.lit([], dtype=pl.List(pl.String()))
            for c in ("classifications", "inputs", "outputs")
        },
        "origin": pl.format("reconcile:{}", pl.lit(snapshot_id)),
    }
    archives = plan.archive.select(
        given.get(c, pl.lit(None)).cast(dtype).alias(c) for c, dtype in EVENT_SCHEMA.items()
    )
    raw = [json.dumps(e, separators=(",", ":")) for e in frame_to_envelopes(archives)]
    archives = archives.with_columns(pl.Series("raw", raw, dtype=pl.String()))
    return ReconciliationEvents(upserts, archives)


# --- the report --------------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    upserts: UpsertResult
    archives: UpsertResult
    resynced: int  # records rewritten to the hub's own store (drift repaired)

    @property
    def kept_newer(self) -> int:
        """Events that changed nothing: the hub already held a newer record."""
        return self.upserts.unchanged + self.archives.unchanged

    def as_dict(self) -> dict[str, int]:
        counts = (self.upserts + self.archives).as_dict()
        del counts["unchanged"], counts["pending"]  # reported as kept_newer_hub_record
        return {**counts, "kept_newer_hub_record": self.kept_newer, "resynced": self.resynced}


def _names(frame: pl.DataFrame, detail: str | None = None) -> list[str]:
    rows = frame.head(SAMPLE_NAMES).iter_rows(named=True)
    out = []
    for row in rows:
        qualified_name = row["qualified_name"].replace("`", "'")  # keeps the code span whole
        name = f"`{qualified_name}`"
        if detail is not None:
            name += f" ({', '.join(row[detail])})"
        out.append(name)
    return out


def summary_markdown(
    diff: ReconciliationDiff,
    plan: ReconciliationPlan,
    applied: Applied | None = None,
    heading: str = "",
) -> str:
    """Counts, up to SAMPLE_NAMES names per category and the fail-safe's outcome."""
    counts = diff.counts
    done = applied is not None
    archived = f"{counts['stale']}" + (
        " (refused)" if plan.archive_refused and counts["stale"] else ""
    )
    rows = [
        ("in the snapshot", str(diff.snapshot_records)),
        ("live in the hub, in scope", str(diff.live_in_scope)),
        ("missing from the hub → " + ("created" if done else "to create"), str(counts["missing"])),
        ("changed → " + ("updated" if done else "to update"), str(counts["changed"])),
        ("stale → " + ("archived" if done else "to archive"), archived),
        ("unchanged", str(counts["unchanged"])),
    ]
    if applied is not None:
        rows.append(("kept newer hub record", str(applied.kept_newer)))
        rows.append(("resynced to the hub", str(applied.resynced)))
    lines = [heading, ""] if heading else []
    if plan.dry_run:
        lines += ["**Dry run**: nothing was applied.", ""]
    lines += ["| | records |", "|---|---:|", *(f"| {k} | {v} |" for k, v in rows), ""]
    if plan.archive_refused:
        lines.append(f"**Fail-safe: archiving refused.** {plan.refusal_reason}.")
    else:
        lines.append(
            f"**Fail-safe: archiving allowed** ({plan.stale_share:.1%} of the live records in "
            f"scope, limit {plan.max_archive_share:.1%})."
        )
    scope = ", ".join(f"`{p}`" for p in diff.scope) or "none (nothing can be stale)"
    lines += ["", f"**Scope:** {scope}"]
    for title, frame, detail in (
        ("Missing", diff.missing, None),
        ("Changed", diff.changed, "differs"),
        ("Stale", diff.stale, None),
    ):
        if frame.height:
            more = f", first {SAMPLE_NAMES}" if frame.height > SAMPLE_NAMES else ""
            lines += ["", f"**{title}** ({frame.height}{more}):", ""]
            lines += [f"- {n}" for n in _names(frame, detail)]
    return "\n".join(lines)


# --- one tenant, end to end --------------------------------------------------------------


@dataclass(frozen=True)
class ReconciliationReport:
    tenant: str
    snapshot: Snapshot
    diff: ReconciliationDiff
    plan: ReconciliationPlan
    rejects: pl.DataFrame  # REJECT_SCHEMA: snapshot rows refused by the rules or the hooks
    quarantined: int  # rejects kept in the quarantine (none in a dry run)
    partial_changes: int
    applied: Applied | None  # None in a dry run
    markdown: str
    hook_stats: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def rejected_by_reason(self) -> dict[str, int]:
        counts = self.rejects.group_by("reason").len().sort("reason")
        return {r: int(n) for r, n in counts.iter_rows()}


def reconcile(
    tenant: str,
    settings: Settings,
    hub: MetadataHub,
    quarantine: QuarantineStore,
    dry_run: bool | None = None,
) -> ReconciliationReport:
    """Reconcile one tenant's hub with its configured source snapshot. The snapshot goes
    through the live path's gates (rules, then the tenant's pre-ingest hooks) so that it is
    compared as the hub would hold it; every rejected row is quarantined with its reason
    (except in a dry run, which changes nothing)."""
    config = reconciliation_config(settings.config, tenant)
    dry = config.dry_run if dry_run is None else dry_run
    base_dir = settings.config_path.parent if settings.config_path else None
    snapshot = read_snapshot(
        resolve_source(config.source, base_dir), tenant, settings.max_event_bytes
    )
    chain = tenant_chain(settings.config, tenant, "pre_ingest")
    hooked = run_chain(
        snapshot.events,
        chain,
        HookContext(tenant=tenant, hub_lookup=lambda names: hub.contains(tenant, names)),
    )
    rejects = pl.concat([snapshot.rejects, hooked.rejects])
    name = f"reconciliation-{snapshot.snapshot_id}"
    quarantined = 0 if dry else quarantine.add(tenant, name, rejects)

    state = source_state(hooked.events)
    found = diff(state.records, hub.listing(tenant), config.scope_prefixes, state.referenced)
    reasons = ", ".join(
        f"{r}: {n}" for r, n in rejects.group_by("reason").len().sort("reason").iter_rows()
    )
    decided = plan(
        found,
        snapshot_ok=rejects.is_empty(),
        max_archive_share=config.max_archive_share,
        dry_run=dry,
        snapshot_problem=f"the snapshot failed its checks: {rejects.height} of "
        f"{snapshot.rows} rows rejected ({reasons})",
    )
    applied = None
    if not dry:
        events = to_events(
            decided,
            hooked.events,
            tenant=tenant,
            snapshot_id=snapshot.snapshot_id,
            snapshot_time=snapshot.taken_at,
        )
        upserted = hub.upsert(tenant, events.upserts)
        archived = hub.upsert(tenant, events.archives)
        refused = [r.rejects for r in (upserted, archived) if r.rejects is not None]
        if refused:
            quarantined += quarantine.add(tenant, f"{name}-hub", pl.concat(refused))
        # Lily's records now hold the snapshot; write them again where the hub's own store
        # (Atlan) drifted from them, e.g. by an edit made there by hand.
        resynced = hub.resync(tenant, decided.upsert_names)
        applied = Applied(upserted, archived, resynced)
    heading = (
        f"Reconciliation of **{tenant}** against snapshot `{snapshot.snapshot_id}` "
        f"({snapshot.files} files, {snapshot.rows} rows, {rejects.height} rejected; "
        f"taken {snapshot.taken_at:%Y-%m-%d %H:%M:%S} UTC)"
    )
    return ReconciliationReport(
        tenant=tenant,
        snapshot=snapshot,
        diff=found,
        plan=decided,
        rejects=rejects,
        quarantined=quarantined,
        partial_changes=state.partial_changes,
        applied=applied,
        markdown=summary_markdown(found, decided, applied, heading),
        hook_stats=hooked.stats,
    )
