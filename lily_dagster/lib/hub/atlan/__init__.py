"""AtlanHub: Atlan as the hub, with LILY_HUB=atlan.

Lily keeps a ledger (an embedded LocalHub under `$LILY_HOME/atlan-ledger/`) that decides
what each record should be by the contract's rules (latest event wins, any order), and an
outbox: the records whose ledger version Atlan has not received yet. Each upsert merges
into the ledger, then publishes the outbox to Atlan, parents before children, in bulk
requests of `LILY_ATLAN_BULK_SIZE` entities within `LILY_ATLAN_RATE_PER_MIN`.

- A run that fails (Atlan down, key revoked) leaves its records in the outbox: the next run
  sends them. Atlan upserts by qualified name, so a resend creates no duplicate.
- A child whose parent (a column's table, a lineage end) is neither in Atlan nor in the
  batch is held, and quarantined as `orphan` after LILY_ORPHAN_WAIT_S.
- An entity Atlan refuses (400/404) is quarantined as `hub_refused` with Atlan's error,
  found by splitting the request; the others of its request go on.
- Deletes are soft deletes (archive) of the asset's guid; an upsert restores.
- Atlan tags are attached only where their typedef exists (pyatlan's tag names);
  the others are counted as skipped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import polars as pl

from lily_dagster.lib.envelope import full_attributes, to_rejects
from lily_dagster.lib.hub.atlan.entities import LINEAGE_TYPES, TABLE_LIKE, bulk_bodies, entity_json
from lily_dagster.lib.hub.base import (
    ACTIVE,
    DELETED,
    LISTING_COLUMNS,
    PATCH_SCHEMA,
    RECORD_SCHEMA,
    SAMPLE_SIZE,
    RecordReads,
    UpsertResult,
    effective_records,
    register_hub,
)
from lily_dagster.lib.hub.local import LocalHub, materialise_changes
from lily_dagster.lib.reasons import Reason
from lily_dagster.settings import ConfigError, Settings, atlan_credentials_problem

if TYPE_CHECKING:
    from lily_dagster.lib.hub.atlan.transport import AtlanTransport

_DDL = """
CREATE TABLE IF NOT EXISTS published (
    qualified_name VARCHAR PRIMARY KEY,
    guid VARCHAR,
    type_name VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    version BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS held (
    qualified_name VARCHAR PRIMARY KEY,
    since TIMESTAMPTZ NOT NULL,
    missing VARCHAR NOT NULL
);
"""
_PUBLISHED_SCHEMA: dict[str, pl.DataType] = {
    "qualified_name": pl.String(),
    "guid": pl.String(),
    "type_name": pl.String(),
    "status": pl.String(),
    "version": pl.Int64(),
}


@dataclass(frozen=True)
class AtlanOptions:
    base_url: str
    api_key: str | None = None
    oauth_client_id: str | None = None
    oauth_client_secret: str | None = None
    bulk_size: int = 50
    rate_per_min: float | None = 400
    retries: int = 5
    backoff_s: float = 1.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> AtlanOptions:
        env = dict(os.environ if env is None else env)
        problem = atlan_credentials_problem(env)
        if problem:
            raise ConfigError(problem)
        base_url = env["ATLAN_BASE_URL"].strip()
        api_key = env.get("ATLAN_API_KEY") or None
        client_id, secret = env.get("ATLAN_OAUTH_CLIENT_ID"), env.get("ATLAN_OAUTH_CLIENT_SECRET")

        def number(name: str, default: float, low: float, high: float) -> float:
            raw = env.get(name)
            try:
                value = float(raw) if raw not in (None, "") else default
            except ValueError:
                raise ConfigError(f"{name} must be a number, got {raw!r}") from None
            if not low <= value <= high:
                raise ConfigError(f"{name} must be between {low:g} and {high:g}, got {raw}")
            return value

        return cls(
            base_url=base_url,
            api_key=api_key,
            oauth_client_id=client_id,
            oauth_client_secret=secret,
            bulk_size=int(number("LILY_ATLAN_BULK_SIZE", 50, 1, 500)),
            rate_per_min=number("LILY_ATLAN_RATE_PER_MIN", 400, 0, 1e6) or None,
            retries=int(number("LILY_ATLAN_RETRIES", 5, 0, 20)),
            backoff_s=number("LILY_ATLAN_BACKOFF_S", 1.0, 0, 60),
        )


@dataclass
class _Outcome:
    created: int = 0
    updated: int = 0
    archived: int = 0
    restored: int = 0
    unchanged: int = 0
    skipped_tags: int = 0
    published: list[dict[str, Any]] = field(default_factory=list)  # _PUBLISHED_SCHEMA rows
    refused: list[tuple[str, str]] = field(default_factory=list)  # (qualified_name, error)
    sample: list[dict[str, str]] = field(default_factory=list)  # shown on the run's page

    def note(self, qualified_name: str, change: str, guid: str | None) -> None:
        if len(self.sample) < SAMPLE_SIZE:
            self.sample.append(
                {"qualified_name": qualified_name, "change": change, "guid": guid or ""}
            )


@register_hub("atlan")
class AtlanHub(RecordReads):
    name = "atlan"

    def __init__(self, options: AtlanOptions, ledger_root: Path, orphan_wait_s: float = 86_400):
        self.options = options
        self.ledger = LocalHub(ledger_root, orphan_wait_s=orphan_wait_s)
        self.orphan_wait_s = orphan_wait_s
        self._transport: AtlanTransport | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> AtlanHub:
        return cls(AtlanOptions.from_env(), settings.home / "atlan-ledger", settings.orphan_wait_s)

    @property
    def transport(self) -> AtlanTransport:
        if self._transport is None:
            from lily_dagster.lib.hub.atlan.transport import AtlanTransport

            o = self.options
            self._transport = AtlanTransport(
                o.base_url,
                api_key=o.api_key,
                oauth_client_id=o.oauth_client_id,
                oauth_client_secret=o.oauth_client_secret,
                rate_per_min=o.rate_per_min,
                retries=o.retries,
                backoff_s=o.backoff_s,
            )
        return self._transport

    # -- writes ---------------------------------------------------------------------------

    def upsert(
        self,
        tenant: str,
        events: pl.DataFrame,
        now: datetime | None = None,
        checkpoint: tuple[str, int] | None = None,
    ) -> UpsertResult:
        """Merge into the ledger, then publish every record Atlan has not received yet
        (this batch's and any a failed run left). Counts are Atlan's: what it created,
        updated, archived, restored; `pending` are children held for their parent."""
        # A checkpoint commits with the ledger: records it covers are in the outbox, and
        # the outbox is sent below or by the next run.
        merged = self.ledger.upsert(tenant, events, now, checkpoint)
        published = self.publish(tenant, now)
        return UpsertResult(
            created=published.created,
            updated=published.updated,
            archived=published.archived,
            restored=published.restored,
            unchanged=merged.unchanged + published.unchanged,
            pending=merged.pending + published.pending,
            rejects=_concat_rejects(merged.rejects, published.rejects),
            details={**merged.details, **published.details},
            sample=published.sample,
        )

    def resync(self, tenant: str, qualified_names: list[str]) -> int:
        """Send these records again as the ledger holds them (after drift in Atlan)."""
        if not qualified_names or not self.ledger.path(tenant).exists():
            return 0
        names = pl.DataFrame({"qualified_name": qualified_names})  # noqa: F841 (DuckDB)
        with self._ledger(tenant) as con:
            con.execute(
                "UPDATE published SET version = 0 WHERE qualified_name IN "
                "(SELECT qualified_name FROM names)"
            )
        result = self.publish(tenant)
        return result.changed + result.unchanged

    def publish(self, tenant: str, now: datetime | None = None) -> UpsertResult:
        now = now or datetime.now(UTC)
        if not self.ledger.path(tenant).exists():
            return UpsertResult()
        with self._ledger(tenant) as con:
            columns = ", ".join(f"r.{c}" for c in RECORD_SCHEMA)
            pending = con.sql(
                f"SELECT {columns} FROM records r LEFT JOIN published p USING (qualified_name) "
                "WHERE p.version IS NULL OR r.version > p.version"
            ).pl()
            if pending.is_empty():
                return UpsertResult()
            names = pending.select("qualified_name")  # noqa: F841 (DuckDB)
            patches = con.sql("SELECT p.* FROM patches p SEMI JOIN names USING (qualified_name)")
            pending = effective_records(
                pending.cast(RECORD_SCHEMA), patches.pl().cast(PATCH_SCHEMA)
            )
            known = con.sql("SELECT * FROM published").pl().cast(_PUBLISHED_SCHEMA)
        outcome, held = self._publish_rounds(pending, known)
        return self._record(tenant, pending, outcome, held, now)

    def _publish_rounds(
        self, pending: pl.DataFrame, known: pl.DataFrame
    ) -> tuple[_Outcome, pl.DataFrame]:
        """Send ready records round by round: a record is ready when every asset it refers
        to (its parent, its lineage ends) exists in Atlan; each round makes more ready."""
        outcome = _Outcome()
        in_atlan = dict(
            known.filter(pl.col("status") == ACTIVE)
            .select("qualified_name", "type_name")
            .iter_rows()
        )
        needs = _references(pending)
        # References Lily has never published may exist in Atlan already (crawled there).
        pending_names = set(pending.get_column("qualified_name").to_list())
        unknown = sorted(
            set(needs.get_column("ref").drop_nulls().to_list()) - set(in_atlan) - pending_names
        )
        if unknown:
            for qn, (_guid, type_name, status) in self.transport.find(unknown).items():
                if status != DELETED:
                    in_atlan[qn] = type_name
        guids = dict(
            known.filter(pl.col("guid").is_not_null()).select("qualified_name", "guid").iter_rows()
        )
        statuses = dict(known.select("qualified_name", "status").iter_rows())
        waiting = pending
        while waiting.height:
            missing = (
                needs.join(waiting.select("qualified_name"), on="qualified_name", how="semi")
                .filter(pl.col("ref").is_not_null() & ~pl.col("ref").is_in(list(in_atlan)))
                .select("qualified_name")
                .unique()
            )
            ready = waiting.join(missing, on="qualified_name", how="anti")
            if ready.is_empty():
                break
            waiting = waiting.join(missing, on="qualified_name", how="semi")
            sent = self._send(ready, in_atlan, guids, statuses, outcome)
            in_atlan.update(sent)
        held = _held(waiting, needs, in_atlan)
        return outcome, held

    def _send(
        self,
        ready: pl.DataFrame,
        in_atlan: dict[str, str],
        guids: dict[str, str],
        statuses: dict[str, str],
        outcome: _Outcome,
    ) -> dict[str, str]:
        """Publish one round; the qualified names now in Atlan → type."""
        now_in: dict[str, str] = {}
        active = ready.filter(pl.col("status") == ACTIVE)
        deleted = ready.filter(pl.col("status") == DELETED)
        for row in deleted.select("qualified_name", "type_name", "version").iter_rows():
            qn, type_name, version = row
            guid = guids.get(qn)
            outcome.published.append(_published(qn, guid, type_name, DELETED, version))
        live = [
            q for q in deleted.get_column("qualified_name").to_list() if statuses.get(q) == ACTIVE
        ]
        # Atlan does not list back an entity a request left unchanged: its guid may be unknown.
        unknown = [q for q in live if q not in guids]
        if unknown:
            guids.update({q: found[0] for q, found in self.transport.find(unknown).items()})
        to_archive = [(q, guids[q]) for q in live if q in guids]
        size = self.options.bulk_size
        for i in range(0, len(to_archive), size):
            chunk = to_archive[i : i + size]
            self.transport.soft_delete([g for _, g in chunk])
            outcome.archived += len(chunk)
            for qn, guid in chunk:
                outcome.note(qn, "archived", guid)
        if active.is_empty():
            return now_in
        types = pl.DataFrame(
            {"qualified_name": list(in_atlan), "type_name": list(in_atlan.values())},
            schema={"qualified_name": pl.String, "type_name": pl.String},
        )
        temp = pl.Series([f"-{i + 1}" for i in range(active.height)])
        built = entity_json(active, temp, types, self.tag_ids)
        outcome.skipped_tags += int(built.get_column("skipped_tags").sum())
        entities = built.get_column("entity").to_list()
        meta = list(
            zip(
                temp.to_list(),
                active.get_column("qualified_name").to_list(),
                active.get_column("type_name").to_list(),
                active.get_column("version").to_list(),
                strict=True,
            )
        )
        for start in range(0, len(entities), size):
            self._post(entities[start : start + size], meta[start : start + size], outcome)
        for entry in outcome.published:
            if entry["status"] == ACTIVE:
                now_in[entry["qualified_name"]] = entry["type_name"]
        for qn in active.get_column("qualified_name").to_list():
            if statuses.get(qn) == DELETED and qn in now_in:
                outcome.restored += 1
        return now_in

    def _post(
        self,
        entities: list[str],
        meta: list[tuple[str, str, str, int]],
        outcome: _Outcome,
    ) -> None:
        """One bulk request; when Atlan refuses it, halves until the refused entities are
        alone (Atlan applies a request all or nothing)."""
        from lily_dagster.lib.hub.atlan.transport import AtlanRefusedError

        try:
            answer = self.transport.bulk_upsert(bulk_bodies(entities, len(entities))[0])
        except AtlanRefusedError as exc:
            if len(entities) > 1:
                half = len(entities) // 2
                self._post(entities[:half], meta[:half], outcome)
                self._post(entities[half:], meta[half:], outcome)
            elif not exc.missing_reference:
                outcome.refused.append((meta[0][1], str(exc)))
            # A missing reference alone: the record stays pending, held for its parent.
            return
        assigned = answer.get("guidAssignments") or {}
        mutated = answer.get("mutatedEntities") or {}
        created = {e.get("guid") for e in mutated.get("CREATE") or []}
        updated = {e.get("guid") for e in mutated.get("UPDATE") or []}
        by_name = {
            (e.get("attributes") or {}).get("qualifiedName"): e.get("guid")
            for kind in ("CREATE", "UPDATE")
            for e in mutated.get(kind) or []
        }
        for temp, qn, type_name, version in meta:
            guid = assigned.get(temp) or by_name.get(qn)
            if guid in created:
                outcome.created += 1
                outcome.note(qn, "created", guid)
            elif guid in updated:
                outcome.updated += 1
                outcome.note(qn, "updated", guid)
            else:
                outcome.unchanged += 1
            # Unchanged entities are not listed back; their guid is already known or is
            # looked up the next time it is needed.
            outcome.published.append(_published(qn, guid, type_name, ACTIVE, version))

    def _record(
        self,
        tenant: str,
        pending: pl.DataFrame,
        outcome: _Outcome,
        held: pl.DataFrame,
        now: datetime,
    ) -> UpsertResult:
        """Write what Atlan now holds; quarantine what it refused and what waited too long
        for its parent."""
        published = pl.DataFrame(outcome.published, schema=_PUBLISHED_SCHEMA)
        refused = pl.DataFrame(
            outcome.refused, schema={"qualified_name": pl.String, "error": pl.String}, orient="row"
        )
        cutoff = now - timedelta(seconds=self.orphan_wait_s)
        with self._ledger(tenant) as con:
            con.execute("BEGIN TRANSACTION")
            # A guid Atlan did not list back (unchanged entity) keeps the one known before.
            con.register("published_new", published)
            con.execute(
                "INSERT OR REPLACE INTO published SELECT n.qualified_name, "
                "coalesce(n.guid, o.guid), n.type_name, n.status, n.version "
                "FROM published_new n LEFT JOIN published o USING (qualified_name)"
            )
            con.execute(
                "DELETE FROM held WHERE qualified_name IN "
                "(SELECT qualified_name FROM published_new)"
            )
            con.register("held_now", held.with_columns(pl.lit(now).alias("since")))
            con.execute(
                "INSERT INTO held SELECT qualified_name, since, missing FROM held_now "
                "ON CONFLICT DO UPDATE SET missing = excluded.missing"
            )
            orphans = con.sql(
                "SELECT h.qualified_name, h.missing FROM held h WHERE h.since < ?",
                params=[cutoff],
            ).pl()
            gone = pl.concat(
                [refused.select("qualified_name"), orphans.select("qualified_name")]
            ).unique()
            con.register("gone", gone)
            # What Atlan never received leaves the ledger with its quarantine entry; what
            # it holds stays, at the version it holds.
            materialise_changes(con, gone)
            con.execute(
                "DELETE FROM records WHERE qualified_name IN (SELECT qualified_name FROM gone) "
                "AND qualified_name NOT IN (SELECT qualified_name FROM published)"
            )
            con.execute(
                "UPDATE published SET version = r.version FROM records r "
                "WHERE published.qualified_name = r.qualified_name "
                "AND published.qualified_name IN (SELECT qualified_name FROM gone)"
            )
            con.execute(
                "DELETE FROM held WHERE qualified_name IN (SELECT qualified_name FROM gone)"
            )
            con.execute("COMMIT")
        rejects = _concat_rejects(
            _record_rejects(pending, refused, Reason.HUB_REFUSED, tenant),
            _record_rejects(
                pending,
                orphans.select(
                    "qualified_name",
                    pl.format(
                        "no parent {} arrived within {} s",
                        pl.col("missing"),
                        pl.lit(int(self.orphan_wait_s)),
                    ).alias("error"),
                ),
                Reason.ORPHAN,
                tenant,
            ),
        )
        return UpsertResult(
            created=outcome.created,
            updated=outcome.updated,
            archived=outcome.archived,
            restored=outcome.restored,
            unchanged=outcome.unchanged,
            pending=held.height - orphans.height,
            rejects=rejects,
            details={"skipped_tags": outcome.skipped_tags, "atlan_requests": self._requests()},
            sample=outcome.sample,
        )

    def _requests(self) -> int:
        return self._transport.requests if self._transport is not None else 0

    @property
    def tag_ids(self) -> dict[str, str]:
        if not hasattr(self, "_tag_ids"):
            self._tag_ids = self.transport.tag_ids()
        return self._tag_ids

    @contextmanager
    def _ledger(self, tenant: str) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.ledger._connect(tenant, read_only=False) as con:
            con.execute(_DDL)
            yield con

    # -- reads ----------------------------------------------------------------------------

    def records(self, tenant: str) -> pl.DataFrame:
        """The ledger's records that Atlan holds (a record not yet received is left out)."""
        records = self.ledger.records(tenant)
        if records.is_empty():
            return records
        with self._ledger(tenant) as con:
            in_atlan = con.sql("SELECT qualified_name FROM published").pl()
        return records.join(in_atlan, on="qualified_name", how="semi")

    def contains(self, tenant: str, qualified_names: list[str]) -> set[str]:
        return self.ledger.contains(tenant, qualified_names)

    # The ledger's change log: what Lily decided, as soon as it is decided (propagation
    # does not wait for Atlan to acknowledge).
    def changes(self, tenant: str, after_seq: int, limit: int) -> pl.DataFrame:
        return self.ledger.changes(tenant, after_seq, limit)

    def last_change(self, tenant: str) -> int:
        return self.ledger.last_change(tenant)

    def checkpoint(self, tenant: str, key: str) -> int | None:
        return self.ledger.checkpoint(tenant, key)

    def checkpoints(self, tenant: str, prefix: str) -> dict[str, int]:
        return self.ledger.checkpoints(tenant, prefix)

    def listing(self, tenant: str) -> pl.DataFrame:
        """What Atlan holds under the connections of the tenant's records, read through
        pyatlan's search (bulk paging), so edits made in Atlan show."""
        records = self.ledger.records(tenant)
        prefixes = sorted(
            set(
                records.select(pl.col("qualified_name").str.split("/").list.head(3).list.join("/"))
                .to_series()
                .to_list()
            )
        )
        tags = {v: k for k, v in self.tag_ids.items()}
        rows = []
        for asset in self.transport.search_assets(prefixes):
            status = getattr(asset.status, "value", asset.status)
            cert = getattr(asset.certificate_status, "value", asset.certificate_status)
            rows.append(
                {
                    "qualified_name": asset.qualified_name,
                    "type_name": asset.type_name,
                    "name": asset.name,
                    "status": str(status or ACTIVE),
                    "description": asset.description,
                    "owner_users": sorted(asset.owner_users or []) or None,
                    "owner_groups": sorted(asset.owner_groups or []) or None,
                    "certificate_status": cert,
                    "classifications": [
                        tags.get(str(t.type_name), str(t.type_name))
                        for t in (asset.atlan_tags or [])
                    ],
                }
            )
        schema = {c: RECORD_SCHEMA[c] for c in LISTING_COLUMNS}
        return pl.DataFrame(rows, schema=schema)


def _published(
    qn: str, guid: str | None, type_name: str, status: str, version: int
) -> dict[str, Any]:
    return {
        "qualified_name": qn,
        "guid": guid,
        "type_name": type_name,
        "status": status,
        "version": version,
    }


def _references(records: pl.DataFrame) -> pl.DataFrame:
    """(qualified_name, ref): the assets each record's entity refers to: a column's or a
    table's parent, a lineage process's ends."""
    type_name = pl.col("type_name")
    has_parent_ref = (
        type_name.is_in(["Column", "Schema", "ColumnProcess", *TABLE_LIKE])
        & pl.col("parent_qualified_name").is_not_null()
    )
    refs = pl.concat_list(
        pl.when(has_parent_ref)
        .then(pl.concat_list(pl.col("parent_qualified_name")))
        .otherwise(pl.lit([], dtype=pl.List(pl.String))),
        pl.when(type_name.is_in(LINEAGE_TYPES))
        .then(pl.concat_list(pl.col("inputs").fill_null([]), pl.col("outputs").fill_null([])))
        .otherwise(pl.lit([], dtype=pl.List(pl.String))),
    )
    return (
        records.filter(pl.col("status") == ACTIVE)
        .select("qualified_name", refs.alias("ref"))
        .explode("ref")
    )


def _held(waiting: pl.DataFrame, needs: pl.DataFrame, in_atlan: dict[str, str]) -> pl.DataFrame:
    return (
        needs.join(waiting.select("qualified_name"), on="qualified_name", how="semi")
        .filter(pl.col("ref").is_not_null() & ~pl.col("ref").is_in(list(in_atlan)))
        .group_by("qualified_name")
        .agg(pl.col("ref").sort().str.join(", ").alias("missing"))
        .sort("qualified_name")
    )


def _record_rejects(
    pending: pl.DataFrame, errors: pl.DataFrame, reason: Reason, tenant: str
) -> pl.DataFrame | None:
    """Quarantine entries for records: their content as an envelope, to fix and replay."""
    if errors.is_empty():
        return None
    rows = pending.join(errors, on="qualified_name", how="inner")
    out = []
    for row in rows.iter_rows(named=True):
        envelope = {
            "event_id": row["content_id"],
            "tenant": tenant,
            "source": "lily:hub",
            "op": "upsert",
            "event_time": row["content_time"].astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "asset": {
                "type_name": row["type_name"],
                "qualified_name": row["qualified_name"],
                "name": row["name"],
                "attributes": full_attributes(row),
                "classifications": list(row["classifications"] or []),
                "inputs": list(row["inputs"] or []),
                "outputs": list(row["outputs"] or []),
            },
        }
        out.append(
            {
                "event_id": row["content_id"],
                "reason": reason.value,
                "detail": f"atlan: {row['error']}",
                "raw": json.dumps(envelope, sort_keys=True),
                "origin": "hub:atlan",
            }
        )
    return to_rejects(pl.DataFrame(out), tenant)


def _concat_rejects(*frames: pl.DataFrame | None) -> pl.DataFrame | None:
    kept = [f for f in frames if f is not None and f.height]
    return pl.concat(kept) if kept else None


__all__ = ["AtlanHub", "AtlanOptions"]
