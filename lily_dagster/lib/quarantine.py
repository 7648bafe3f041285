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
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import polars as pl

from lily_dagster.lib.durable import write_atomic
from lily_dagster.lib.envelope import REJECT_SCHEMA
from lily_dagster.lib.strict_json import dumps

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
    def __init__(self, root: Path) -> None:
        self.root = root

    def add(self, tenant: str, name: str, rejects: pl.DataFrame) -> int:
        """Durably keep `rejects` under the file `name`; returns how many were kept."""
        if rejects.is_empty():
            return 0
        frame = _conform(rejects.with_columns(pl.lit(tenant).alias("tenant")))
        write_atomic(self.root / tenant / f"{name}.parquet", frame.write_parquet)
        return frame.height

    def read(self, tenant: str, reasons: list[str] | None = None) -> pl.DataFrame:
        """What the tenant's quarantine holds now: each entry once (its latest rejection;
        an entry is a Kafka message, or a payload of another source), less those replayed
        since they were rejected; optionally only some reasons."""
        directory = self.root / tenant
        files = sorted(directory.glob("*.parquet")) if directory.is_dir() else []
        if not files:
            return pl.DataFrame(schema=REJECT_SCHEMA)
        frame = pl.concat([_conform(pl.read_parquet(f)) for f in files], how="vertical")
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
        frames = []
        for file in files:
            frame = pl.read_parquet(file)
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
        write_atomic(self.root / tenant / "_replayed" / f"{name}.parquet", frame.write_parquet)

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
