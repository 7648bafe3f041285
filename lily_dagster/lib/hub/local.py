"""LocalHub: the embedded hub, one DuckDB database per tenant under `$LILY_HOME/hub/`."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import polars as pl

from lily_dagster.lib.crypto import Ciphers, TenantCipher, ciphers_of, plaintext
from lily_dagster.lib.crypto.sealer import BulkSealer
from lily_dagster.lib.durable import fsync_dir
from lily_dagster.lib.gdpr.subject import Subject
from lily_dagster.lib.hub.base import (
    LISTING_COLUMNS,
    PATCH_SCHEMA,
    RECORD_SCHEMA,
    HubErasure,
    HubState,
    RecordReads,
    UpsertResult,
    effective_records,
    merge_records,
    orphan_rejects,
    patch_fields,
    patch_rows,
    reduce_batch,
    register_hub,
)
from lily_dagster.lib.hub.changelog import (
    LATEST_CHANGE,
    SOURCE_EVENT,
    STORED_SCHEMA,
    change_rows,
    with_identity,
)
from lily_dagster.lib.hub.erasure import Eraser, changed_fields
from lily_dagster.settings import Settings

T = TypeVar("T")
_logger = logging.getLogger(__name__)
_SCAN_ROWS = 200_000  # rows per batch when every row of a table is read (erasure)

# The content columns sealed with the tenant's cipher (CONTRACT.md §7), by table; the rest
# (names, types, statuses, tags, times, versions) stays plaintext and queryable. A sealed
# list is a one-element VARCHAR[], so the schema is the same sealed or not, and the SQL
# that moves rows between records and changes copies sealed values as they are.
RECORD_SEALED = ("description", "owner_users", "owner_groups", "attributes", "before")
PATCH_SEALED = ("patch", "raw")
SEALED: dict[str, tuple[str, ...]] = {
    "records": RECORD_SEALED,
    "changes": RECORD_SEALED,
    "patches": PATCH_SEALED,
}

_DDL = """
-- No primary key: DuckDB's index cost ~60 % of a bulk load's record writes, and every
-- lookup here is a hash join on a batch's names, which scans anyway. Names stay unique
-- because each batch is reduced to one row per name and replaces the stored ones
-- (databases made with the key keep it; the writes below serve both).
CREATE TABLE IF NOT EXISTS records (
    qualified_name VARCHAR NOT NULL,
    type_name VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    description VARCHAR%SEALED%,
    owner_users VARCHAR[]%SEALED%,
    owner_groups VARCHAR[]%SEALED%,
    certificate_status VARCHAR,
    parent_qualified_name VARCHAR,
    glossary_terms VARCHAR[],
    attributes VARCHAR%SEALED%,
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
);
CREATE TABLE IF NOT EXISTS patches (
    qualified_name VARCHAR NOT NULL,
    event_id VARCHAR NOT NULL,
    event_time TIMESTAMPTZ NOT NULL,
    patch VARCHAR%SEALED% NOT NULL,
    raw VARCHAR%SEALED%,
    origin VARCHAR,
    stored_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (qualified_name, event_id)
);
ALTER TABLE records ADD COLUMN IF NOT EXISTS glossary_terms VARCHAR[];
CREATE TABLE IF NOT EXISTS checkpoints (
    key VARCHAR PRIMARY KEY,
    value BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    seq BIGINT NOT NULL,  -- unique by construction; no index to maintain on append
    qualified_name VARCHAR NOT NULL,
    type_name VARCHAR NOT NULL,
    change VARCHAR NOT NULL,
    version BIGINT NOT NULL,
    name VARCHAR,
    status VARCHAR NOT NULL,
    attributes VARCHAR%SEALED%,
    classifications VARCHAR[],
    changed VARCHAR[],
    before VARCHAR%SEALED%,
    changed_at TIMESTAMPTZ NOT NULL
);
ALTER TABLE changes ADD COLUMN IF NOT EXISTS description VARCHAR%SEALED%;
ALTER TABLE changes ADD COLUMN IF NOT EXISTS owner_users VARCHAR[]%SEALED%;
ALTER TABLE changes ADD COLUMN IF NOT EXISTS owner_groups VARCHAR[]%SEALED%;
ALTER TABLE changes ADD COLUMN IF NOT EXISTS certificate_status VARCHAR;
ALTER TABLE changes ADD COLUMN IF NOT EXISTS parent_qualified_name VARCHAR;
ALTER TABLE changes ADD COLUMN IF NOT EXISTS glossary_terms VARCHAR[];
ALTER TABLE records ADD COLUMN IF NOT EXISTS change_seq BIGINT;
ALTER TABLE records ADD COLUMN IF NOT EXISTS change VARCHAR;
ALTER TABLE records ADD COLUMN IF NOT EXISTS changed VARCHAR[];
ALTER TABLE records ADD COLUMN IF NOT EXISTS before VARCHAR%SEALED%;
ALTER TABLE records ADD COLUMN IF NOT EXISTS changed_at TIMESTAMPTZ;
-- The event that made each change (`lily trace`); null in rows of earlier releases.
ALTER TABLE changes ADD COLUMN IF NOT EXISTS source_event_id VARCHAR;
"""


def _ddl(cipher: TenantCipher) -> str:
    """The schema. A database made while sealing stores its sealed columns uncompressed:
    ciphertext does not compress, and DuckDB's string compression spent three times the
    write finding that out (0.65 s against 0.19 s per 850k sealed values; the file is
    20-40 % larger). Columns keep what they were made with."""
    return _DDL.replace("%SEALED%", " USING COMPRESSION uncompressed" if cipher.enabled else "")


# The stored columns of a change, from the change log or from a record's own row (its
# latest change, while kept there): the change log in order is their union.
_CHANGE_FROM_RECORD = ", ".join(
    "change_seq AS seq" if c == "seq"
    else "coalesce(classifications, []) AS classifications" if c == "classifications"
    else c
    for c in STORED_SCHEMA
)  # fmt: skip
_READ_CHANGES = (
    f"SELECT {', '.join(STORED_SCHEMA)} FROM changes WHERE seq > $after "
    f"UNION ALL SELECT {_CHANGE_FROM_RECORD} FROM records WHERE change_seq > $after "
    "ORDER BY seq LIMIT $limit"
)
_LAST_SEQ = (
    "SELECT greatest((SELECT coalesce(max(seq), 0) FROM changes), "
    "(SELECT coalesce(max(change_seq), 0) FROM records))"
)
_RECORD_COLUMNS = ", ".join(RECORD_SCHEMA)
# DuckDB's buffer pool may otherwise grow to 80 % of the machine's memory; capped, a bulk
# load's memory stays bounded by its batches (DuckDB spills what does not fit). Every
# connection of this process to a file must use the same settings.
_DUCKDB_CONFIG: dict[str, Any] = {"memory_limit": "512MB"}


def materialise_changes(con: duckdb.DuckDBPyConnection, names: pl.DataFrame) -> None:
    """Move the latest change kept on the rows of the records named in `names` (its
    qualified_name column) into the change log; call before changing those rows."""
    con.register("__changing", names.select("qualified_name"))
    try:
        kept = (
            "change_seq IS NOT NULL AND qualified_name IN (SELECT qualified_name FROM __changing)"
        )
        con.execute(
            f"INSERT INTO changes BY NAME SELECT {_CHANGE_FROM_RECORD}, "
            f"event_id AS source_event_id FROM records WHERE {kept}"
        )
        con.execute(
            "UPDATE records SET "
            + ", ".join(f"{c} = NULL" for c in LATEST_CHANGE)
            + f" WHERE {kept}"
        )
    finally:
        con.unregister("__changing")


_LOG_SCHEMA: dict[str, pl.DataType] = {
    "qualified_name": pl.String(),
    "change": pl.String(),
    "changed": pl.List(pl.String()),
    "before": pl.String(),
}


@dataclass(frozen=True)
class HubTrail:
    """What the hub holds of one event (`LocalHub.event_trail`)."""

    changes: list[dict[str, Any]]  # seq, qualified_name, change, version, changed_at
    patched: list[str]  # records with a partial change of this event stored
    current: list[dict[str, Any]]  # the named records now: version, status, event_id, ...


class HubLockedError(RuntimeError):
    """The tenant's database stayed locked by another process past the retry budget."""


@register_hub("local")
class LocalHub(RecordReads):
    name = "local"

    def __init__(
        self,
        root: Path,
        lock_timeout_s: float = 120.0,
        orphan_wait_s: float = 86_400.0,
        ciphers: Ciphers = plaintext,
    ) -> None:
        self.root = root
        self.lock_timeout_s = lock_timeout_s
        # Each tenant's content columns are sealed on write and opened on read.
        self.ciphers = ciphers
        # How long a partial change waits for its record before it is quarantined as orphan.
        self.orphan_wait_s = orphan_wait_s
        self._guard = threading.Lock()
        self._writers: dict[Path, int] = {}  # files this process has open read-write

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalHub:
        return cls(
            settings.hub_dir, orphan_wait_s=settings.orphan_wait_s, ciphers=ciphers_of(settings)
        )

    def path(self, tenant: str) -> Path:
        return self.root / f"{tenant}.duckdb"

    @contextmanager
    def _connect(self, tenant: str, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(tenant)
        with self._guard:
            # A read while this process writes the file (a backfill looks names up while
            # its previous batch is written) joins the writer's database: DuckDB refuses a
            # read-only connection beside a read-write one, and reads the last commit.
            read_only = read_only and not self._writers.get(path)
            if not read_only:
                self._writers[path] = self._writers.get(path, 0) + 1
        try:
            con = self._with_lock_retry(
                lambda: duckdb.connect(str(path), read_only=read_only, config=_DUCKDB_CONFIG)
            )
            try:
                yield con
            finally:
                con.close()
        finally:
            if not read_only:
                with self._guard:
                    self._writers[path] -= 1

    def _with_lock_retry(self, fn: Callable[[], T]) -> T:
        # DuckDB allows one writing process per file; runs of one tenant are serialised by
        # the run queue, but the CLI (export) or a backfill may hold it for a moment.
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                return fn()
            except (duckdb.IOException, duckdb.ConnectionException) as exc:
                # Another process holds the file, or a read of this process opened it
                # read-only a moment before this write.
                if not any(m in str(exc).lower() for m in ("lock", "different configuration")):
                    raise
                if time.monotonic() > deadline:
                    raise HubLockedError(
                        f"hub database locked for {self.lock_timeout_s:.0f}s: {exc}"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def upsert(
        self,
        tenant: str,
        events: pl.DataFrame,
        now: datetime | None = None,
        checkpoint: tuple[str, int] | None = None,
        sealed_ahead: pl.DataFrame | None = None,
    ) -> UpsertResult:
        """Apply a batch; `checkpoint` (key, value) is recorded in the same transaction, so
        a bulk load that resumes from it never applies a batch twice. `sealed_ahead` (from
        `bulk_sealer`) spares sealing the records' content again."""
        if events.is_empty() and checkpoint is None:
            return UpsertResult()
        # The change log's time. (The merge, the partial changes and the orphan expiry each
        # read the clock when `now` is None: an orphan stored by this batch is past a zero
        # wait by the time expiry runs.)
        changed_at = now or datetime.now(UTC)
        if events.get_column("patch").null_count() == events.height:
            full, patches = events, events.clear()  # bulk loads: no copy of the batch
        else:
            is_patch = pl.col("patch").is_not_null()
            full, patches = events.filter(~is_patch), events.filter(is_patch)
        cipher = self.ciphers(tenant)
        with self._connect(tenant, read_only=False) as con:
            con.execute(_ddl(cipher))
            con.execute("BEGIN TRANSACTION")
            try:
                result = UpsertResult()
                logs: list[pl.DataFrame] = []
                if full.height:
                    candidates = reduce_batch(full)
                    existing = _existing(con, cipher, candidates)
                    merged = merge_records(candidates, existing, now)
                    log = merged.log.cast(_LOG_SCHEMA)  # type: ignore[arg-type]
                    if patches.is_empty() and not _any_patch_of(con, log):
                        # The records' content is what users see: each keeps its change.
                        kept = change_rows(merged.changed, log, tenant, _next_seq(con), changed_at)
                        _write(con, cipher, merged.changed, merged.log, kept, sealed_ahead)
                    else:
                        _write(con, cipher, merged.changed, merged.log, ahead=sealed_ahead)
                        logs.append(log)
                    result += merged.result
                if patches.height:
                    patched, patch_log = _store_patches(con, cipher, patches, now)
                    result += patched
                    logs.append(patch_log)
                _log_changes(con, cipher, logs, changed_at)
                result += self._expire_orphans(con, cipher, now)
                if checkpoint is not None:
                    con.execute(
                        "INSERT OR REPLACE INTO checkpoints VALUES (?, ?)", list(checkpoint)
                    )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            return replace(result, state=HubState(_status_counts(con), _last_change(con)))

    def bulk_sealer(self, tenant: str) -> BulkSealer:
        """Seals batches' record content before their upserts, in a thread of its own."""
        return BulkSealer(self.ciphers(tenant), RECORD_SEALED)

    def _expire_orphans(
        self, con: duckdb.DuckDBPyConnection, cipher: TenantCipher, now: datetime | None
    ) -> UpsertResult:
        cutoff = (now or datetime.now(UTC)) - timedelta(seconds=self.orphan_wait_s)
        orphans = con.sql(
            "SELECT p.* FROM patches p ANTI JOIN records r USING (qualified_name) "
            "WHERE p.stored_at < ?",
            params=[cutoff],
        ).pl()
        if orphans.is_empty():
            return UpsertResult()
        con.execute(
            "DELETE FROM patches WHERE stored_at < ? AND qualified_name NOT IN "
            "(SELECT qualified_name FROM records)",
            [cutoff],
        )
        # The quarantine gets the payload as received (its own store seals it again).
        opened = cipher.open_frame(orphans, ("raw",))
        return UpsertResult(rejects=orphan_rejects(opened, self.orphan_wait_s))

    def _read(
        self, tenant: str, table: str, read: Callable[[duckdb.DuckDBPyConnection], T], empty: T
    ) -> T:
        """`read` on the tenant's database opened read-only; `empty` where the tenant has
        no database or it has no `table` yet."""
        if not self._exists(tenant):
            return empty
        with self._connect(tenant, read_only=True) as con:
            return read(con) if _has_table(con, table) else empty

    def changes(self, tenant: str, after_seq: int, limit: int) -> pl.DataFrame:
        """Up to `limit` changes of the tenant after position `after_seq`, in order."""

        def read(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
            if not _has_column(con, "records", "change_seq"):
                # Made by an earlier release, not written since: its log is all in changes.
                return con.sql(
                    "SELECT * FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
                    params=[after_seq, limit],
                ).pl()
            return con.sql(_READ_CHANGES, params={"after": after_seq, "limit": limit}).pl()

        frame = self._read(tenant, "changes", read, pl.DataFrame(schema=STORED_SCHEMA))
        stored = frame.select(
            pl.col(c) if c in frame.columns else pl.lit(None).alias(c) for c in STORED_SCHEMA
        ).cast(STORED_SCHEMA)  # type: ignore[arg-type]
        opened = self.ciphers(tenant).open_frame(stored, SEALED["changes"])
        return with_identity(opened, tenant)

    def event_trail(self, tenant: str, event_id: str, qualified_names: list[str]) -> HubTrail:
        """What the hub holds of one event (`lily trace`): the changes it made, the partial
        changes stored for it, and the current version of the records it names."""

        def read(con: duckdb.DuckDBPyConnection) -> HubTrail:
            changes = _changes_made_by(con, event_id)
            patched = con.execute(
                "SELECT qualified_name FROM patches WHERE event_id = ? ORDER BY 1", [event_id]
            ).fetchall()
            names = pl.DataFrame(  # noqa: F841 (read by DuckDB by name)
                {"qualified_name": qualified_names}, schema={"qualified_name": pl.String}
            )
            current = con.sql(
                "SELECT qualified_name, version, status, event_id, content_id FROM records "
                "SEMI JOIN names USING (qualified_name) ORDER BY qualified_name"
            ).pl()
            return HubTrail(changes, [str(p) for (p,) in patched], current.to_dicts())

        return self._read(tenant, "records", read, HubTrail([], [], []))

    def checkpoint(self, tenant: str, key: str) -> int | None:
        """The value last recorded under `key` with an upsert (None: never)."""
        return self.checkpoints(tenant, key).get(key)

    def checkpoints(self, tenant: str, prefix: str) -> dict[str, int]:
        """Every value recorded with an upsert under a key starting with `prefix`."""

        def read(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
            found = con.execute(
                "SELECT key, value FROM checkpoints WHERE starts_with(key, ?)", [prefix]
            ).fetchall()
            return {str(k): int(v) for k, v in found}

        return self._read(tenant, "checkpoints", read, {})

    def last_change(self, tenant: str) -> int:
        """The position of the tenant's latest change (0: none)."""
        return self._read(tenant, "changes", _last_change, 0)

    def _exists(self, tenant: str) -> bool:
        return self.path(tenant).exists()

    def status_counts(self, tenant: str) -> dict[str, int]:
        """How many records per status, counted in the database (partial changes never
        change a status): reading every record to count them took 5 GiB at 10M records."""
        return self._read(tenant, "records", _status_counts, {})

    def records(self, tenant: str) -> pl.DataFrame:
        """The tenant's records as users see them (partial changes applied)."""
        if not self._exists(tenant):
            return pl.DataFrame(schema=RECORD_SCHEMA)
        with self._connect(tenant, read_only=True) as con:
            records = con.sql(f"SELECT {_RECORD_COLUMNS} FROM records ORDER BY qualified_name").pl()
            patches = con.sql("SELECT * FROM patches").pl()
        return opened_effective(self.ciphers(tenant), records, patches)

    def listing(self, tenant: str) -> pl.DataFrame:
        return self.records(tenant).select(LISTING_COLUMNS)

    def read_store(self) -> LocalHub:
        return self  # the embedded store is the hub

    def changed_since(self, tenant: str, after_seq: int | None) -> tuple[int, pl.DataFrame]:
        """(the tenant's last change position, the records as users see them that changed
        after `after_seq`: every record when None), read in one read-only connection so
        that the position and the records agree."""
        empty = (0, pl.DataFrame(schema=RECORD_SCHEMA))
        if not self._exists(tenant):
            return empty
        with self._connect(tenant, read_only=True) as con:
            if not _has_table(con, "records"):
                return empty
            last = _next_seq(con) - 1 if _has_column(con, "records", "change_seq") else None
            if last is None:  # an earlier release's database: its log is all in changes
                (last,) = con.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchall()[0]
                after_seq = None  # no per-record positions to select by: read it all
            if after_seq is None:
                where = ""
            else:
                where = (
                    f"WHERE qualified_name IN (SELECT qualified_name FROM changes WHERE seq > "
                    f"{int(after_seq)} UNION ALL SELECT qualified_name FROM records WHERE "
                    f"change_seq > {int(after_seq)})"
                )
            records = con.sql(f"SELECT {_RECORD_COLUMNS} FROM records {where}").pl()
            patches = con.sql(f"SELECT * FROM patches {where}").pl()
        return int(last), opened_effective(self.ciphers(tenant), records, patches)

    def resync(self, tenant: str, qualified_names: list[str]) -> int:
        return 0  # the embedded store is the hub: there is nothing to drift from

    def contains(self, tenant: str, qualified_names: list[str]) -> set[str]:
        if not qualified_names or not self._exists(tenant):
            return set()
        names = pl.DataFrame({"qualified_name": qualified_names})  # noqa: F841 (read by DuckDB)
        with self._connect(tenant, read_only=True) as con:
            found = con.sql(
                "SELECT qualified_name FROM records SEMI JOIN names USING (qualified_name)"
            ).pl()
        return set(found.get_column("qualified_name").to_list())

    def tenants(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.duckdb"))

    # -- erasure --------------------------------------------------------------------------

    def erase_subject(
        self, tenant: str, subject: Subject, dry_run: bool = False, now: datetime | None = None
    ) -> HubErasure:
        """Remove a data subject from the tenant's records, change log and partial changes
        in one transaction (dry_run: count only, write nothing). Each record it changes as
        users see it gets a new version and an `updated` change naming the fields changed
        (with no `before`), which propagation delivers like any update; older change-log
        entries and stored partial changes are scrubbed in place. Then the database is
        rewritten into a fresh file, since DuckDB keeps deleted rows in its free blocks."""
        if not self._exists(tenant):
            return HubErasure()
        cipher = self.ciphers(tenant)
        eraser = Eraser(subject)
        with self._connect(tenant, read_only=dry_run) as con:
            if not _has_table(con, "records"):
                return HubErasure()
            if not dry_run:
                con.execute(_ddl(cipher))  # an earlier release's database gets today's columns
            con.execute("BEGIN TRANSACTION")
            try:
                erasure = _erase(con, cipher, eraser, dry_run, now or datetime.now(UTC))
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            if not dry_run:
                self._compact(con, tenant)
        return erasure

    def _compact(self, con: duckdb.DuckDBPyConnection, tenant: str) -> None:
        """Copy the database into a fresh file and put that in place of the old one (still
        held by `con`, so no other process writes it meanwhile). Skipped while another
        connection of this process uses the file: it would go on with the old one."""
        path = self.path(tenant)
        with self._guard:
            if self._writers.get(path, 0) > 1:
                # Every erasure compacts: running it again (it then finds nothing) does it.
                _logger.warning("hub of tenant %s in use: its file was not compacted", tenant)
                return
        fresh = path.with_name(f".{path.name}.compact")
        for leftover in (fresh, fresh.with_name(fresh.name + ".wal")):
            leftover.unlink(missing_ok=True)  # of a compaction a crash interrupted
        (name,) = con.execute("SELECT current_database()").fetchall()[0]
        quoted = str(fresh).replace("'", "''")
        con.execute(f"ATTACH '{quoted}' AS __fresh")
        try:
            con.execute(f'COPY FROM DATABASE "{name}" TO __fresh')
        finally:
            con.execute("DETACH __fresh")  # checkpointed: the copy is whole in its file
        con.execute("CHECKPOINT")  # and the old file's WAL is empty: nothing to replay
        with fresh.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(fresh, path)
        fsync_dir(path.parent)


def _store_patches(
    con: duckdb.DuckDBPyConnection,
    cipher: TenantCipher,
    patches: pl.DataFrame,
    now: datetime | None,
) -> tuple[UpsertResult, pl.DataFrame]:
    """Keep each new partial change; a record it changes gets a new version. Returns the
    counts and the change-log entries of the records whose view changed."""
    now = now or datetime.now(UTC)
    rows = patch_rows(patches, now)
    # Only the keys go to DuckDB: the content reaches it sealed, never in plaintext.
    keys = rows.select("qualified_name", "event_id")  # noqa: F841 (read by DuckDB by name)
    stored = con.sql("SELECT qualified_name, event_id FROM patches SEMI JOIN keys "
                     "USING (qualified_name, event_id)").pl()  # fmt: skip
    new = rows.join(stored, on=["qualified_name", "event_id"], how="anti")
    if new.is_empty():
        return UpsertResult(unchanged=patches.height), pl.DataFrame(schema=_LOG_SCHEMA)
    _append(con, cipher, "patches", new)
    times = new.select("qualified_name", "event_time", "event_id")  # noqa: F841 (DuckDB)
    # Newer than the record's base content: the record as users see it changes.
    applied = con.sql(
        "SELECT DISTINCT r.qualified_name FROM records r JOIN times n USING (qualified_name) "
        "WHERE (n.event_time, n.event_id) > (r.content_time, r.content_id)"
    ).pl()
    materialise_changes(con, applied)
    con.execute(
        "UPDATE records SET version = version + 1, updated_at = ? "
        "WHERE qualified_name IN (SELECT qualified_name FROM applied)",
        [now],
    )
    pending = con.execute(
        "SELECT count(*) FROM times n ANTI JOIN records r USING (qualified_name)"
    ).fetchall()
    waiting = int(pending[0][0])
    touched = set(applied.get_column("qualified_name").to_list())
    fields: dict[str, set[str]] = {}
    for qn, patch in new.select("qualified_name", "patch").iter_rows():
        if qn in touched:
            fields.setdefault(qn, set()).update(patch_fields(json.loads(patch)))
    log = pl.DataFrame(
        {
            "qualified_name": list(fields),
            "change": ["updated"] * len(fields),
            "changed": [sorted(f) for f in fields.values()],
            "before": [None] * len(fields),
        },
        schema=_LOG_SCHEMA,
    )
    counts = UpsertResult(
        updated=applied.height,
        unchanged=patches.height - applied.height - waiting,
        pending=waiting,
    )
    return counts, log


def _log_changes(
    con: duckdb.DuckDBPyConnection,
    cipher: TenantCipher,
    logs: list[pl.DataFrame],
    now: datetime,
) -> None:
    """Append to the change log the batch's changes not kept on their records' rows
    (partial changes apply to them), in the same transaction as the records, with the
    records' content as users now see it."""
    parts = [part for part in logs if part.height]
    if not parts:
        return
    log = parts[0]
    if len(parts) > 1:
        # A record both upserted and patched in one batch is one change.
        log = (
            pl.concat(parts)
            .group_by("qualified_name", maintain_order=True)
            .agg(
                pl.col("change").first(),
                pl.col("changed").explode().drop_nulls().unique().sort(),
                pl.col("before").first(),
            )
        )
    names = log.select("qualified_name")  # noqa: F841 (read by DuckDB by name)
    patches = con.sql("SELECT p.* FROM patches p SEMI JOIN names USING (qualified_name)").pl()
    records = con.sql(
        f"SELECT {_RECORD_COLUMNS} FROM records SEMI JOIN names USING (qualified_name)"
    ).pl()
    effective = opened_effective(cipher, records, patches)
    rows = change_rows(effective, log, cipher.tenant, _next_seq(con), now)
    _append(con, cipher, "changes", rows)


def opened_effective(
    cipher: TenantCipher, records: pl.DataFrame, patches: pl.DataFrame
) -> pl.DataFrame:
    """`effective_records` of stored rows (records: RECORD_SCHEMA columns, patches: the
    patches table's), their content opened with the tenant's cipher."""
    opened = cipher.open_frame(records.cast(RECORD_SCHEMA), RECORD_SEALED)  # type: ignore[arg-type]
    if patches.is_empty():
        return opened
    stored = patches.cast(PATCH_SCHEMA)  # type: ignore[arg-type]
    return effective_records(opened, cipher.open_frame(stored, ("patch",)))


def _existing(
    con: duckdb.DuckDBPyConnection, cipher: TenantCipher, keyed: pl.DataFrame
) -> pl.DataFrame:
    """The stored rows of the batch's names (RECORD_SCHEMA), opened."""
    keys = keyed.select("qualified_name").unique()  # noqa: F841 (read by DuckDB by name)
    (any_record,) = con.execute("SELECT EXISTS (SELECT 1 FROM records)").fetchall()[0]
    if not any_record:  # a first load: nothing to look up
        return pl.DataFrame(schema=RECORD_SCHEMA)
    # Only the names are scanned to find the rows; only the rows found are read whole
    # (a bulk load's batch usually finds none): reading every column of the table to
    # join it took ~1.2 s per 500k names against 10M records.
    rows = con.sql("SELECT rowid AS row FROM records SEMI JOIN keys USING (qualified_name)").pl()
    if rows.is_empty():
        return pl.DataFrame(schema=RECORD_SCHEMA)
    found = con.sql(
        f"SELECT {_RECORD_COLUMNS} FROM records WHERE rowid IN (SELECT row FROM rows)"
    ).pl()
    return cipher.open_frame(found.cast(RECORD_SCHEMA), RECORD_SEALED)


def _write(
    con: duckdb.DuckDBPyConnection,
    cipher: TenantCipher,
    changed: pl.DataFrame,
    log: pl.DataFrame | None = None,
    kept: pl.DataFrame | None = None,
    ahead: pl.DataFrame | None = None,
) -> None:
    """Write merged rows, with their change (`kept`: change rows) where given, and their
    content sealed ahead where `ahead` has it. Rows of
    records this batch created are plain appends (bulk loads are mostly new records);
    the others replace their stored rows, whose kept change moves to the change log."""
    if changed.is_empty():
        return
    created = (  # new records are at version 1, whatever their change
        changed.filter(pl.col("version") == 1).select("qualified_name")
        if log is not None
        else pl.DataFrame(schema={"qualified_name": pl.String})
    )
    rest = changed.join(created, on="qualified_name", how="anti")
    if rest.height:
        materialise_changes(con, rest)
        names = rest.select("qualified_name")  # noqa: F841 (read by DuckDB by name)
        con.execute(
            "DELETE FROM records WHERE qualified_name IN (SELECT qualified_name FROM names)"
        )
    if kept is not None and kept.height:
        latest = kept.select(
            "qualified_name", pl.col("seq").alias("change_seq"), *LATEST_CHANGE[1:]
        )
        if latest.height == changed.height and latest["qualified_name"].equals(
            changed["qualified_name"]
        ):
            changed = changed.with_columns(latest.drop("qualified_name"))  # aligned
        else:
            changed = changed.join(latest, on="qualified_name", how="left")
    _append(con, cipher, "records", changed, ahead)  # sealed once, with its change's `before`


def _erase(
    con: duckdb.DuckDBPyConnection,
    cipher: TenantCipher,
    eraser: Eraser,
    dry_run: bool,
    now: datetime,
) -> HubErasure:
    """The body of `LocalHub.erase_subject`'s transaction. Content is sealed, so every row
    is read and opened to be searched (in batches); only the rows holding the subject are
    kept and written back, sealed."""
    patches = cipher.open_frame(con.sql("SELECT * FROM patches").pl(), PATCH_SEALED)
    patches_new, patch_hit = eraser.scrub(patches, documents=PATCH_SEALED)
    records_hit = _records_holding(con, cipher, eraser)
    changes_hit = _changes_holding(con, cipher, eraser)
    touched = pl.concat(
        [records_hit.select("qualified_name"), patches.filter(patch_hit).select("qualified_name")]
    ).unique()
    old, new = _views(con, cipher, eraser, touched, patches, patches_new)
    log = changed_fields(old, new)
    erasure = HubErasure(
        records_changed=log.get_column("qualified_name").to_list(),
        changes_scrubbed=changes_hit.height + _kept_changes(records_hit),
        patches_scrubbed=int(patch_hit.sum()),
    )
    if dry_run:
        return erasure
    _replace_rows(con, cipher, "records", records_hit, ("qualified_name",))
    _replace_rows(
        con, cipher, "patches", patches_new.filter(patch_hit), ("qualified_name", "event_id")
    )
    _replace_rows(con, cipher, "changes", changes_hit, ("seq",))
    if log.height:
        # A new version of each, its change in the change log like a partial change's.
        materialise_changes(con, log)
        con.execute(
            "UPDATE records SET version = version + 1, updated_at = ? "
            "WHERE qualified_name IN (SELECT qualified_name FROM log)",
            [now],
        )
        current = new.join(log, on="qualified_name", how="semi").with_columns(
            pl.col("version") + 1, pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("updated_at")
        )
        entries = log.with_columns(
            pl.lit("updated").alias("change"), pl.lit(None, dtype=pl.String).alias("before")
        ).cast(_LOG_SCHEMA)  # type: ignore[arg-type]
        rows = change_rows(current, entries, cipher.tenant, _next_seq(con), now)
        # An erasure, not an event, made these changes.
        _append(
            con, cipher, "changes", rows.with_columns(pl.lit(None, pl.String).alias(SOURCE_EVENT))
        )
    return erasure


def _kept_changes(records: pl.DataFrame) -> int:
    """How many of these record rows keep their latest change (a change-log entry)."""
    if "change_seq" not in records.columns:  # a database of an earlier release
        return 0
    return records.height - records.get_column("change_seq").null_count()


def _scan(
    con: duckdb.DuckDBPyConnection, cipher: TenantCipher, sql: str, sealed: tuple[str, ...]
) -> Iterator[pl.DataFrame]:
    """The rows of `sql`, opened, in batches (a table can be far larger than memory)."""
    reader = con.sql(sql).to_arrow_reader(_SCAN_ROWS)
    for batch in reader:
        yield cipher.open_frame(pl.from_arrow(batch), sealed)  # type: ignore[arg-type]


def _records_holding(
    con: duckdb.DuckDBPyConnection, cipher: TenantCipher, eraser: Eraser
) -> pl.DataFrame:
    """The stored record rows holding the subject (their content or their kept change's
    `before`), whole and scrubbed."""
    empty = pl.DataFrame(schema={"qualified_name": pl.String})
    return _holding(con, cipher, eraser, "SELECT * FROM records", empty)


def _changes_holding(
    con: duckdb.DuckDBPyConnection, cipher: TenantCipher, eraser: Eraser
) -> pl.DataFrame:
    """The change-log rows holding the subject: seq and the content columns, scrubbed."""
    present = [c for c in RECORD_SEALED if _has_column(con, "changes", c)]
    sql = f"SELECT {', '.join(['seq', *present])} FROM changes"
    return _holding(con, cipher, eraser, sql, pl.DataFrame(schema={"seq": pl.Int64}))


def _holding(
    con: duckdb.DuckDBPyConnection,
    cipher: TenantCipher,
    eraser: Eraser,
    sql: str,
    empty: pl.DataFrame,
) -> pl.DataFrame:
    """The rows of `sql` holding the subject, scrubbed (`empty` when none does)."""
    hits = []
    for part in _scan(con, cipher, sql, RECORD_SEALED):
        scrubbed, hit = _scrub_content(eraser, part)
        if hit.any():
            hits.append(scrubbed.filter(hit))
    return pl.concat(hits) if hits else empty


def _scrub_content(eraser: Eraser, frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.Series]:
    return eraser.scrub(
        frame,
        text=("description",),
        lists=("owner_users", "owner_groups"),
        documents=("attributes", "before"),
    )


def _views(
    con: duckdb.DuckDBPyConnection,
    cipher: TenantCipher,
    eraser: Eraser,
    names: pl.DataFrame,
    patches: pl.DataFrame,
    patches_new: pl.DataFrame,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The records of `names` as users see them before and after the erasure."""
    if names.is_empty():
        empty = pl.DataFrame(schema=RECORD_SCHEMA)
        return empty, empty
    rows = con.sql(
        f"SELECT {_RECORD_COLUMNS} FROM records SEMI JOIN names USING (qualified_name)"
    ).pl()
    old = cipher.open_frame(rows.cast(RECORD_SCHEMA), RECORD_SEALED)
    new, _hit = _scrub_content(eraser, old)
    before = effective_records(old, patches.cast(PATCH_SCHEMA))  # type: ignore[arg-type]
    after = effective_records(new, patches_new.cast(PATCH_SCHEMA))  # type: ignore[arg-type]
    return before, after


def _replace_rows(
    con: duckdb.DuckDBPyConnection,
    cipher: TenantCipher,
    table: str,
    rows: pl.DataFrame,
    key: tuple[str, ...],
) -> None:
    """Put `rows` (plaintext, each a whole stored row or its key and content columns) in
    place of the stored rows with the same `key`, sealed."""
    if rows.is_empty():
        return
    sealed = cipher.seal_frame(rows, SEALED[table])
    con.register("__scrubbed", sealed.to_arrow(compat_level=pl.CompatLevel.newest()))
    try:
        match = " AND ".join(f"{table}.{k} = s.{k}" for k in key)
        content = [c for c in SEALED[table] if c in rows.columns]
        con.execute(
            f"UPDATE {table} SET {', '.join(f'{c} = s.{c}' for c in content)} "
            f"FROM __scrubbed s WHERE {match}"
        )
    finally:
        con.unregister("__scrubbed")


def _last_change(con: duckdb.DuckDBPyConnection) -> int:
    if not _has_column(con, "records", "change_seq"):  # an earlier release's
        (last,) = con.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchall()[0]
        return int(last)
    return _next_seq(con) - 1


def _status_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    found = con.execute(
        "SELECT status, count(*) FROM records GROUP BY status ORDER BY status"
    ).fetchall()
    return {str(status): int(n) for status, n in found}


def _next_seq(con: duckdb.DuckDBPyConnection) -> int:
    """The change log's next position."""
    (last,) = con.execute(_LAST_SEQ).fetchall()[0]
    return int(last) + 1


def _any_patch_of(con: duckdb.DuckDBPyConnection, log: pl.DataFrame) -> bool:
    """Whether a stored partial change names one of the log's records."""
    (any_patch,) = con.execute("SELECT EXISTS (SELECT 1 FROM patches)").fetchall()[0]
    if not any_patch or log.is_empty():
        return False
    names = log.select("qualified_name")  # noqa: F841 (read by DuckDB by name)
    (found,) = con.execute(
        "SELECT EXISTS (SELECT 1 FROM patches SEMI JOIN names USING (qualified_name))"
    ).fetchall()[0]
    return bool(found)


def _append(
    con: duckdb.DuckDBPyConnection,
    cipher: TenantCipher,
    table: str,
    frame: pl.DataFrame,
    ahead: pl.DataFrame | None = None,
) -> None:
    """Append `frame` (plaintext) to `table` by column name, its content columns sealed
    (what DuckDB, its WAL and its spill files see). Handed over as Arrow with string
    views, which DuckDB reads as they are: the default conversion copied every string
    (~0.2 s per 1M rows)."""
    sealed = cipher.seal_frame(frame, SEALED.get(table, ()), ahead)
    con.register("__append", sealed.to_arrow(compat_level=pl.CompatLevel.newest()))
    try:
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM __append")
    finally:
        con.unregister("__append")


def _changes_made_by(con: duckdb.DuckDBPyConnection, event_id: str) -> list[dict[str, Any]]:
    """The changes `event_id` made: in the change log, or kept on a record's own row."""
    columns = "qualified_name, change, version, changed_at"
    parts = []
    if _has_column(con, "changes", SOURCE_EVENT):  # not in a database no release wrote since
        parts.append(f"SELECT seq, {columns} FROM changes WHERE {SOURCE_EVENT} = $id")
    if _has_column(con, "records", "change_seq"):
        parts.append(
            f"SELECT change_seq AS seq, {columns} FROM records "
            "WHERE event_id = $id AND change_seq IS NOT NULL"
        )
    if not parts:
        return []
    found = con.sql(" UNION ALL ".join(parts) + " ORDER BY seq", params={"id": event_id}).pl()
    return found.to_dicts()


def _has_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    found = con.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = ? AND column_name = ?",
        [table, column],
    ).fetchall()
    return bool(found[0][0])


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    found = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
    ).fetchall()
    return bool(found[0][0])
