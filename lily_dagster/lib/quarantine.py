"""Per-tenant quarantine: every rejected event with its reason code and raw payload.

Append-only Parquet files under `quarantine/{tenant}/`, one per batch and stage, written
atomically; the same batch quarantined again overwrites its own file, and readers dedupe,
so replays and batches landed again never double-count: one entry per Kafka message (its
topic/partition/offset, `message_key`, and its payload), so two messages with the same
bytes (two empty values, two `null`s) are two entries; for other sources one entry per
payload (`quarantine_id`, a hash of its bytes), so a webhook request sent again or an event
accepted twice does not double the quarantine. Files of earlier releases read the same way.

A payload is kept byte for byte: as text (`raw`) when it is UTF-8, else as its bytes
(`raw_bytes`). Files of earlier releases, which have no `raw_bytes`, read as text.

Every file is sealed with the tenant's cipher (the store's `ciphers`; a dead-letter queue
is a QuarantineStore too); files written before encryption was on read as they are.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from lily_dagster.lib.crypto import Ciphers, TenantCipher, ciphers_of, plaintext
from lily_dagster.lib.durable import write_atomic
from lily_dagster.lib.envelope import REJECT_SCHEMA, quarantine_id
from lily_dagster.lib.gdpr.payload import scrub_payload, scrub_payload_text
from lily_dagster.lib.gdpr.subject import Subject
from lily_dagster.lib.metrics.store import MetricsStore
from lily_dagster.lib.metrics.updates import quarantined
from lily_dagster.lib.strict_json import dumps
from lily_dagster.settings import Settings

REPLAYED_SCHEMA: dict[str, pl.DataType] = {
    "quarantine_id": pl.String(),
    # the message_key of the entry replayed; null (and in files of earlier releases, which
    # lack the column): every entry of that payload
    "message": pl.String(),
    "replayed_at": pl.Datetime("us", "UTC"),
}
_MESSAGE = "_message"
_REPLAY_SUFFIX = "#replay"  # quarantine replay lands an entry under its origin + this


def message_of(origin: str | None) -> str | None:
    """The message a quarantined payload came in (see `message_key`), from its origin."""
    if origin is None:
        return None
    while origin.endswith(_REPLAY_SUFFIX):
        origin = origin.removesuffix(_REPLAY_SUFFIX)
    return origin if origin.startswith("kafka:") else None


def message_key() -> pl.Expr:
    """`message_of` the rows' origins: a Kafka message's `kafka:topic/partition/offset` (its
    replays' `#replay` suffixes dropped), null for other sources."""
    base = pl.col("origin").str.replace(r"(#replay)+$", "")
    return pl.when(base.str.starts_with("kafka:")).then(base).otherwise(None)


class QuarantineStore:
    def __init__(
        self, root: Path, ciphers: Ciphers = plaintext, metrics: MetricsStore | None = None
    ) -> None:
        self.root = root
        self.ciphers = ciphers
        self.metrics = metrics  # counts quarantined events by reason (the quarantine's)

    @classmethod
    def from_settings(cls, settings: Settings, root: Path | None = None) -> QuarantineStore:
        """The quarantine under $LILY_HOME (or the store at `root`: a dead-letter queue),
        sealed with the tenants' keys."""
        metrics = MetricsStore.from_settings(settings) if root is None else None
        return cls(root or settings.quarantine_dir, ciphers_of(settings), metrics)

    def add(self, tenant: str, name: str, rejects: pl.DataFrame) -> int:
        """Durably keep `rejects` under the file `name`; returns how many were kept."""
        if rejects.is_empty():
            return 0
        frame = _conform(rejects.with_columns(pl.lit(tenant).alias("tenant")))
        _write(self.ciphers(tenant), self.root / tenant / f"{name}.parquet", frame)
        if self.metrics is not None:
            # Keyed by the entry: a batch quarantined again (a retried run) counts once.
            self.metrics.try_record(quarantined(tenant, frame), key=f"quarantined:{tenant}:{name}")
        return frame.height

    def _files(self, tenant: str) -> list[Path]:
        directory = self.root / tenant
        return sorted(directory.glob("*.parquet")) if directory.is_dir() else []

    def read(self, tenant: str, reasons: list[str] | None = None) -> pl.DataFrame:
        """What the tenant's quarantine holds now: each entry once (its latest rejection;
        an entry is a Kafka message, or a payload of another source), less those replayed
        since they were rejected; optionally only some reasons."""
        files = self._files(tenant)
        if not files:
            return pl.DataFrame(schema=REJECT_SCHEMA)
        cipher = self.ciphers(tenant)
        frame = pl.concat([_conform(cipher.read_parquet(f)) for f in files], how="vertical")
        frame = (
            frame.with_columns(message_key().alias(_MESSAGE))
            .sort("quarantined_at")
            .unique(["quarantine_id", _MESSAGE], keep="last", maintain_order=True)
        )
        replayed = self._replayed(tenant)
        if replayed.height:
            # A replay of an earlier release (or of a dead-letter queue) names payloads only.
            any_message = replayed.filter(pl.col("message").is_null()).select(
                "quarantine_id", pl.col("replayed_at").alias("_replayed_any")
            )
            this_message = replayed.filter(pl.col("message").is_not_null()).select(
                "quarantine_id",
                pl.col("message").alias(_MESSAGE),
                pl.col("replayed_at").alias("_replayed_this"),
            )
            replayed_at = pl.max_horizontal("_replayed_any", "_replayed_this")
            frame = (
                frame.join(any_message, on="quarantine_id", how="left")
                .join(this_message, on=["quarantine_id", _MESSAGE], how="left")
                .filter(replayed_at.is_null() | (pl.col("quarantined_at") > replayed_at))
                .drop("_replayed_any", "_replayed_this")
            )
        if reasons:
            frame = frame.filter(pl.col("reason").is_in(reasons))
        return frame.drop(_MESSAGE)

    def _replayed(self, tenant: str) -> pl.DataFrame:
        directory = self.root / tenant / "_replayed"
        files = sorted(directory.glob("*.parquet")) if directory.is_dir() else []
        if not files:
            return pl.DataFrame(schema=REPLAYED_SCHEMA)
        cipher = self.ciphers(tenant)
        frames = []
        for file in files:
            frame = cipher.read_parquet(file)
            if "message" not in frame.columns:  # an earlier release's
                frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias("message"))
            frames.append(frame.select(list(REPLAYED_SCHEMA)).cast(REPLAYED_SCHEMA))  # type: ignore[arg-type]
        return (
            pl.concat(frames).group_by("quarantine_id", "message").agg(pl.col("replayed_at").max())
        )

    def mark_replayed(
        self,
        tenant: str,
        name: str,
        quarantine_ids: list[str],
        at: datetime,
        messages: list[str | None] | None = None,
    ) -> None:
        """Record that these entries were sent through the pipeline again at `at`; if they
        fail again they are rejected after `at` and show again. `messages` (their
        `message_of`, by position) names the Kafka message of each; without it (or null)
        every entry of the payload counts as replayed."""
        frame = pl.DataFrame(
            {
                "quarantine_id": quarantine_ids,
                "message": messages or [None] * len(quarantine_ids),
                "replayed_at": [at] * len(quarantine_ids),
            },
            schema=REPLAYED_SCHEMA,
        )
        _write(self.ciphers(tenant), self.root / tenant / "_replayed" / f"{name}.parquet", frame)

    def tenants(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith(".")
        )

    def counts_by_reason(self, tenant: str) -> dict[str, int]:
        frame = self.read(tenant)
        counts = frame.group_by("reason").len().sort("reason")
        return {r: int(n) for r, n in counts.iter_rows()}

    def export(self, tenant: str) -> Iterator[str]:
        """JSON Lines of CONTRACT.md §2: {"event_id", "reason", "detail", "raw"}, `raw` the
        payload's text; for a payload that is not UTF-8, `raw` is null and `raw_base64`
        holds its exact bytes."""
        for row in self.read(tenant).iter_rows(named=True):
            line = {k: row[k] for k in ("event_id", "reason", "detail", "raw")}
            if row["raw_bytes"] is not None:
                line["raw"] = None
                line["raw_base64"] = base64.b64encode(row["raw_bytes"]).decode("ascii")
            yield dumps(line, ensure_ascii=False)

    def erase_subject(self, tenant: str, subject: Subject, dry_run: bool = False) -> int:
        """Erase `subject` from the tenant's entries (payload, detail, event id); how many
        entries (rows of its files) mentioned it (dry_run: would be rewritten). An entry
        whose payload changes gets the id of its new payload, so a replay of it still
        takes it out of the quarantine; the replay records of its old id are noted for
        the new one first. Files are replaced atomically: a crash leaves each whole, and
        running it again finishes the job."""
        cipher = self.ciphers(tenant)
        rewrites: list[tuple[Path, pl.DataFrame]] = []
        renamed: dict[str, str] = {}
        for path in self._files(tenant):
            frame = _conform(cipher.read_parquet(path))
            scrubbed, ids = _scrub_entries(subject, frame)
            if scrubbed is not None:
                rewrites.append((path, scrubbed))
                renamed.update(ids)
        changed = sum(int((f.get_column("_erased")).sum()) for _, f in rewrites)
        if dry_run or not rewrites:
            return changed
        self._carry_replays(tenant, renamed)
        for path, scrubbed in rewrites:
            _write(cipher, path, scrubbed.drop("_erased"))
        return changed

    def _carry_replays(self, tenant: str, renamed: dict[str, str]) -> None:
        """Note the replays of entries whose id changes under their new id too (written
        before the entries change: a crash in between leaves records of ids not yet used)."""
        replayed = self._replayed(tenant).filter(pl.col("quarantine_id").is_in(list(renamed)))
        if replayed.is_empty():
            return
        carried = replayed.with_columns(pl.col("quarantine_id").replace_strict(renamed))
        digest = hashlib.sha256(",".join(sorted(renamed.values())).encode()).hexdigest()[:20]
        path = self.root / tenant / "_replayed" / f"erased-{digest}.parquet"
        _write(self.ciphers(tenant), path, carried.select(list(REPLAYED_SCHEMA)))


def _write(cipher: TenantCipher, path: Path, frame: pl.DataFrame) -> None:
    write_atomic(path, lambda tmp: cipher.write_parquet(frame, tmp))


# The text an entry may hold content in besides its payload (`raw`, `raw_bytes`).
_TEXT = ("event_id", "detail")


def _scrub_entries(
    subject: Subject, frame: pl.DataFrame
) -> tuple[pl.DataFrame | None, dict[str, str]]:
    """Entries (REJECT_SCHEMA) with `subject` erased, an `_erased` column marking those
    that mentioned it, and their old → new quarantine ids; (None, {}) when none did."""
    # Rows that may mention it: a payload spelt with JSON escapes or not UTF-8 is looked at.
    maybe = subject.mentioned(frame, text=["raw", *_TEXT]) | (
        pl.col("raw").str.contains("\\\\", literal=True).fill_null(False)
        | pl.col("raw_bytes").is_not_null()
    )
    marked = frame.with_columns(maybe.alias("_erased"))
    rows: list[dict[str, Any]] = []
    renamed: dict[str, str] = {}
    for row in marked.filter("_erased").iter_rows(named=True):
        row["_erased"] = _scrub_entry(subject, row)
        if row["_erased"] and row["quarantine_id"] != (old := _old_id(row)):
            renamed[old] = row["quarantine_id"]
        rows.append(row)
    if not any(r["_erased"] for r in rows):
        return None, {}
    schema = {**REJECT_SCHEMA, "_erased": pl.Boolean()}
    looked_at = pl.DataFrame(rows, schema=schema)
    return pl.concat([marked.filter(~pl.col("_erased")), looked_at]), renamed


def _scrub_entry(subject: Subject, row: dict[str, Any]) -> bool:
    """Erase `subject` from one entry in place (a new payload gets its id, the old one kept
    under `_old_id`); whether the entry mentioned it."""
    raw = scrub_payload_text(subject, row["raw"])
    data = scrub_payload(subject, row["raw_bytes"]) if row["raw_bytes"] is not None else None
    texts = {c: subject.scrub_text(row[c]) for c in _TEXT if subject.in_text(row[c])}
    if raw is None and data is None and not texts:
        return False
    row.update(texts)
    if raw is not None or data is not None:
        row["_old_id"] = row["quarantine_id"]
        row["raw"] = raw if raw is not None else row["raw"]
        row["raw_bytes"] = data if data is not None else row["raw_bytes"]
        payload = row["raw_bytes"] if row["raw_bytes"] is not None else row["raw"]
        row["quarantine_id"] = quarantine_id(payload)
    return True


def _old_id(row: dict[str, Any]) -> str:
    return str(row.pop("_old_id", row["quarantine_id"]))


def payload_bytes() -> pl.Expr:
    """The exact bytes of a quarantined payload (of REJECT_SCHEMA rows), as it arrived."""
    return pl.coalesce(pl.col("raw_bytes"), pl.col("raw").cast(pl.Binary))


def _conform(frame: pl.DataFrame) -> pl.DataFrame:
    """A rejects frame in REJECT_SCHEMA: columns an earlier release did not write (raw_bytes)
    are null."""
    missing = [pl.lit(None, dtype=t).alias(c) for c, t in REJECT_SCHEMA.items() if c not in frame]
    if missing:
        frame = frame.with_columns(missing)
    return frame.select(list(REJECT_SCHEMA)).cast(REJECT_SCHEMA)  # type: ignore[arg-type]
