"""AtlanHub: Atlan as the hub, with LILY_HUB=atlan.

Lily keeps a ledger (an embedded LocalHub under `$LILY_HOME/atlan-ledger/`, its content
sealed with the tenant's key) that decides what each record should be by the contract's
rules (latest event wins, any order), and an outbox: the records whose ledger version
Atlan has not received yet. Each upsert merges into the ledger, then publishes the outbox
to Atlan, parents before children, in bulk requests of `LILY_ATLAN_BULK_SIZE` entities
within `LILY_ATLAN_RATE_PER_MIN`.

- A run that fails (Atlan down, key revoked) leaves its records in the outbox: the next run
  sends them. Atlan upserts by qualified name, so a resend creates no duplicate.
- A child whose parent (a column's table, a lineage end) is neither in Atlan nor in the
  batch is held, and quarantined as `orphan` after LILY_ORPHAN_WAIT_S.
- An entity Atlan refuses (400/404) is quarantined as `hub_refused` with Atlan's error,
  found by splitting the request; the others of its request go on.
- Deletes are soft deletes (archive) of the asset's guid; an upsert restores.
- Atlan tags are attached only where their typedef exists (pyatlan's tag names);
  the others are counted as skipped.
- Erasing a data subject scrubs the ledger and sends the records it changed as updates
  (or, with purge, deletes them from Atlan for good and creates them again).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import polars as pl

from lily_dagster.lib.crypto import Ciphers, ciphers_of, plaintext
from lily_dagster.lib.hub.atlan.entities import bulk_bodies, entity_json
from lily_dagster.lib.hub.atlan.ledger import (
    LEDGER_DDL,
    PUBLISHED_SCHEMA,
    PublishOutcome,
    concat_rejects,
    held_children,
    published_row,
    record_rejects,
    references,
    write_outcome,
)
from lily_dagster.lib.hub.base import (
    ACTIVE,
    DELETED,
    LISTING_COLUMNS,
    RECORD_SCHEMA,
    HubErasure,
    RecordReads,
    UpsertResult,
    register_hub,
)
from lily_dagster.lib.hub.local import LocalHub, opened_effective
from lily_dagster.lib.reasons import Reason
from lily_dagster.settings import AtlanOptions, Settings

if TYPE_CHECKING:
    from lily_dagster.lib.crypto.sealer import BulkSealer
    from lily_dagster.lib.gdpr.subject import Subject
    from lily_dagster.lib.hub.atlan.transport import AtlanTransport

# Passes over the outbox per publish: a pass restores what the previous one's archives
# took along in Atlan (a table's columns); a column archived twice waits for the next run.
_PUBLISH_PASSES = 3


@register_hub("atlan")
class AtlanHub(RecordReads):
    name = "atlan"

    def __init__(
        self,
        options: AtlanOptions,
        ledger_root: Path,
        orphan_wait_s: float = 86_400,
        ciphers: Ciphers = plaintext,
    ):
        self.options = options
        # The ledger's content is sealed like the embedded hub's (the same tables).
        self.ledger = LocalHub(ledger_root, orphan_wait_s=orphan_wait_s, ciphers=ciphers)
        self.orphan_wait_s = orphan_wait_s
        self._transport: AtlanTransport | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> AtlanHub:
        options = settings.atlan or AtlanOptions.from_env()
        return cls(
            options, settings.home / "atlan-ledger", settings.orphan_wait_s, ciphers_of(settings)
        )

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

    def bulk_sealer(self, tenant: str) -> BulkSealer:
        """The ledger's sealing, done ahead (Atlan itself gets plaintext)."""
        return self.ledger.bulk_sealer(tenant)

    def upsert(
        self,
        tenant: str,
        events: pl.DataFrame,
        now: datetime | None = None,
        checkpoint: tuple[str, int] | None = None,
        sealed_ahead: pl.DataFrame | None = None,
    ) -> UpsertResult:
        """Merge into the ledger, then publish every record Atlan has not received yet
        (this batch's and any a failed run left). Counts are Atlan's: what it created,
        updated, archived, restored; `pending` are children held for their parent."""
        # A checkpoint commits with the ledger: records it covers are in the outbox, and
        # the outbox is sent below or by the next run.
        sent_before = self._outcomes()
        merged = self.ledger.upsert(tenant, events, now, checkpoint, sealed_ahead)
        published = self.publish(tenant, now)
        requests = {
            f"requests_{outcome}": n - sent_before.get(outcome, 0)
            for outcome, n in self._outcomes().items()
        }
        return UpsertResult(
            created=published.created,
            updated=published.updated,
            archived=published.archived,
            restored=published.restored,
            unchanged=merged.unchanged + published.unchanged,
            pending=merged.pending + published.pending,
            rejects=concat_rejects(merged.rejects, published.rejects),
            details={**merged.details, **published.details, **requests},
            sample=published.sample,
            state=merged.state,  # the ledger's: what status_counts and last_change read
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
        """Send the outbox. Archiving a table archives its columns in Atlan (a composite
        relationship): columns the ledger holds as active are then sent again, which
        restores them, so every record ends in Atlan with the ledger's status."""
        now = now or datetime.now(UTC)
        total = UpsertResult()
        for first in (True, *([False] * (_PUBLISH_PASSES - 1))):
            result, cascaded = self._publish_once(tenant, now)
            # What is held and the request count are the latest pass's, not a sum.
            total = (
                result
                if first
                else replace(total + result, pending=result.pending, details=result.details)
            )
            if not cascaded:
                break
        return total

    def _publish_once(self, tenant: str, now: datetime) -> tuple[UpsertResult, int]:
        """One pass over the outbox; also how many active records Atlan archived along with
        a parent (left in the outbox for the next pass)."""
        if not self.ledger.path(tenant).exists():
            return UpsertResult(), 0
        with self._ledger(tenant) as con:
            columns = ", ".join(f"r.{c}" for c in RECORD_SCHEMA)
            # A deleted record Atlan never received is sent too: it is created, then archived
            # (records of earlier releases, kept as deleted without ever being created, too).
            pending = con.sql(
                f"SELECT {columns} FROM records r LEFT JOIN published p USING (qualified_name) "
                "WHERE p.version IS NULL OR r.version > p.version "
                "OR (p.status = 'DELETED' AND p.guid IS NULL)"
            ).pl()
            if pending.is_empty():
                return UpsertResult(), 0
            names = pending.select("qualified_name")  # noqa: F841 (DuckDB)
            patches = con.sql("SELECT p.* FROM patches p SEMI JOIN names USING (qualified_name)")
            pending = opened_effective(self.ledger.ciphers(tenant), pending, patches.pl())
            known = con.sql("SELECT * FROM published").pl().cast(PUBLISHED_SCHEMA)
        outcome, held = self._publish_rounds(pending, known)
        return self._record(tenant, pending, outcome, held, now), len(outcome.cascaded)

    def _publish_rounds(
        self, pending: pl.DataFrame, known: pl.DataFrame
    ) -> tuple[PublishOutcome, pl.DataFrame]:
        """Send ready records round by round: a record is ready when every asset it refers
        to (its parent, its lineage ends) exists in Atlan, active or archived; each round
        makes more ready."""
        outcome = PublishOutcome()
        # What exists in Atlan: what it holds active, and what Lily archived there.
        in_atlan = dict(
            known.filter((pl.col("status") == ACTIVE) | pl.col("guid").is_not_null())
            .select("qualified_name", "type_name")
            .iter_rows()
        )
        to_send = pending.filter(
            (pl.col("status") == ACTIVE) | ~pl.col("qualified_name").is_in(list(in_atlan))
        )
        needs = references(to_send)
        # References Lily has never published may exist in Atlan already (crawled there).
        pending_names = set(pending.get_column("qualified_name").to_list())
        unknown = sorted(
            set(needs.get_column("ref").drop_nulls().to_list()) - set(in_atlan) - pending_names
        )
        if unknown:
            for qn, (_guid, type_name, _status) in self.transport.find(unknown).items():
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
        held = held_children(waiting, needs, in_atlan)
        return outcome, held

    def _send(
        self,
        ready: pl.DataFrame,
        in_atlan: dict[str, str],
        guids: dict[str, str],
        statuses: dict[str, str],
        outcome: PublishOutcome,
    ) -> dict[str, str]:
        """Publish one round: archive what Atlan holds active and the ledger deleted, then
        upsert the active records and the deleted ones Atlan never had, then archive the
        latter. Returns the qualified names now in Atlan → type."""
        deleted = ready.filter(pl.col("status") == DELETED)
        live = [
            q for q in deleted.get_column("qualified_name").to_list() if statuses.get(q) == ACTIVE
        ]
        self._archive(live, guids, statuses, outcome)
        new_deleted = deleted.filter(~pl.col("qualified_name").is_in(list(in_atlan)))
        upserts = pl.concat([ready.filter(pl.col("status") == ACTIVE), new_deleted])
        now_in = self._upsert_entities(upserts, in_atlan, guids, outcome)
        new_names = set(new_deleted.get_column("qualified_name").to_list())
        for qn in now_in:
            if qn not in new_names and statuses.get(qn) == DELETED:
                outcome.restored += 1
            statuses[qn] = ACTIVE
        self._archive([q for q in new_names if q in now_in], guids, statuses, outcome)
        for row in deleted.select("qualified_name", "type_name", "version").iter_rows():
            qn, type_name, version = row
            if qn in in_atlan or qn in now_in:
                outcome.published.append(
                    published_row(qn, guids.get(qn), type_name, DELETED, version)
                )
        return now_in

    def _archive(
        self,
        names: list[str],
        guids: dict[str, str],
        statuses: dict[str, str],
        outcome: PublishOutcome,
    ) -> None:
        """Soft-delete these assets; what Atlan archived with them (a table's columns) is
        noted in `outcome.cascaded`."""
        # Atlan does not list back an entity a request left unchanged: its guid may be unknown.
        unknown = [q for q in names if q not in guids]
        if unknown:
            guids.update({q: found[0] for q, found in self.transport.find(unknown).items()})
        to_archive = [(q, guids[q]) for q in names if q in guids]
        size = self.options.bulk_size
        for i in range(0, len(to_archive), size):
            chunk = to_archive[i : i + size]
            answer = self.transport.soft_delete([g for _, g in chunk])
            outcome.archived += len(chunk)
            for qn, guid in chunk:
                outcome.note(qn, "archived", guid)
                statuses[qn] = DELETED
            asked = {qn for qn, _ in chunk}
            for entity in (answer.get("mutatedEntities") or {}).get("DELETE") or []:
                taken = (entity.get("attributes") or {}).get("qualifiedName")
                if taken and taken not in asked:
                    outcome.cascaded[taken] = (entity.get("guid"), entity.get("typeName"))
                    statuses[taken] = DELETED

    def _upsert_entities(
        self,
        records: pl.DataFrame,
        in_atlan: dict[str, str],
        guids: dict[str, str],
        outcome: PublishOutcome,
    ) -> dict[str, str]:
        """Upsert these records as active entities (their guids noted in `guids`); the
        qualified names Atlan now holds → type."""
        if records.is_empty():
            return {}
        types = pl.DataFrame(
            {"qualified_name": list(in_atlan), "type_name": list(in_atlan.values())},
            schema={"qualified_name": pl.String, "type_name": pl.String},
        )
        temp = pl.Series([f"-{i + 1}" for i in range(records.height)])
        built = entity_json(records, temp, types, self.tag_ids)
        outcome.skipped_tags += int(built.get_column("skipped_tags").sum())
        entities = built.get_column("entity").to_list()
        meta = list(
            zip(
                temp.to_list(),
                records.get_column("qualified_name").to_list(),
                records.get_column("type_name").to_list(),
                records.get_column("version").to_list(),
                strict=True,
            )
        )
        first = len(outcome.published)
        size = self.options.bulk_size
        for start in range(0, len(entities), size):
            self._post(entities[start : start + size], meta[start : start + size], outcome)
        sent: dict[str, str] = {}
        for entry in outcome.published[first:]:
            qn = entry["qualified_name"]
            sent[qn] = entry["type_name"]
            if entry["guid"]:
                guids[qn] = entry["guid"]
            outcome.cascaded.pop(qn, None)  # archived with its parent, now restored
        return sent

    def _post(
        self,
        entities: list[str],
        meta: list[tuple[str, str, str, int]],
        outcome: PublishOutcome,
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
            outcome.published.append(published_row(qn, guid, type_name, ACTIVE, version))

    def _record(
        self,
        tenant: str,
        pending: pl.DataFrame,
        outcome: PublishOutcome,
        held: pl.DataFrame,
        now: datetime,
    ) -> UpsertResult:
        """Write what Atlan now holds; quarantine what it refused and what waited too long
        for its parent."""
        cutoff = now - timedelta(seconds=self.orphan_wait_s)
        with self._ledger(tenant) as con:
            refused, orphans = write_outcome(con, outcome, held, now, cutoff)
        rejects = concat_rejects(
            record_rejects(pending, refused, Reason.HUB_REFUSED, tenant),
            record_rejects(
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

    def _outcomes(self) -> dict[str, int]:
        return dict(self._transport.outcomes) if self._transport is not None else {}

    @property
    def tag_ids(self) -> dict[str, str]:
        if not hasattr(self, "_tag_ids"):
            self._tag_ids = self.transport.tag_ids()
        return self._tag_ids

    # -- erasure -------------------------------------------------------------------------

    def erase_subject(
        self, tenant: str, subject: Subject, dry_run: bool = False, purge: bool = False
    ) -> HubErasure:
        """Erase a data subject from the ledger (`LocalHub.erase_subject`: records, change
        log, partial changes), then send the records it changed to Atlan as updates through
        the normal publish (a failed publish leaves them in the outbox for the next run).
        Atlan keeps the previous values in its audit history: with `purge`, those assets
        are first deleted from Atlan for good (AtlanDeleteType.PURGE) and recreated by the
        publish, scrubbed."""
        if dry_run:
            return self.ledger.erase_subject(tenant, subject, dry_run=True)
        if purge:
            planned = self.ledger.erase_subject(tenant, subject, dry_run=True)
            self._purge(tenant, planned.records_changed)
        erasure = self.ledger.erase_subject(tenant, subject)
        self.publish(tenant)
        return erasure

    def _purge(self, tenant: str, qualified_names: list[str]) -> None:
        """Delete these assets from Atlan with their history, and forget them in the ledger
        (with what Atlan deleted along with them), so the next publish creates them again."""
        if not qualified_names:
            return
        from pyatlan.model.enums import AtlanDeleteType

        names = pl.DataFrame({"qualified_name": qualified_names})  # noqa: F841 (DuckDB)
        with self._ledger(tenant) as con:
            known = con.sql(
                "SELECT qualified_name, guid FROM published SEMI JOIN names USING (qualified_name) "
                "WHERE guid IS NOT NULL"
            ).fetchall()
        guids = {str(qn): str(guid) for qn, guid in known}
        unknown = [q for q in qualified_names if q not in guids]
        if unknown:
            guids.update({q: found[0] for q, found in self.transport.find(unknown).items()})
        gone = set(guids)
        chunk = list(guids.values())
        size = self.options.bulk_size
        for i in range(0, len(chunk), size):
            answer = self.transport.delete(chunk[i : i + size], AtlanDeleteType.PURGE.value)
            for entity in (answer.get("mutatedEntities") or {}).get("DELETE") or []:
                taken = (entity.get("attributes") or {}).get("qualifiedName")
                if taken:
                    gone.add(taken)  # a table's columns go with it
        forget = pl.DataFrame({"qualified_name": sorted(gone)})  # noqa: F841 (DuckDB)
        with self._ledger(tenant) as con:
            con.execute(
                "DELETE FROM published WHERE qualified_name IN (SELECT qualified_name FROM forget)"
            )

    @contextmanager
    def _ledger(self, tenant: str) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.ledger._connect(tenant, read_only=False) as con:
            con.execute(LEDGER_DDL)
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

    def read_store(self) -> LocalHub:
        return self.ledger  # what Lily wrote: API reads never go to Atlan

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
