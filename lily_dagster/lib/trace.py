"""`lily trace EVENT_ID --tenant T`: where an event is and what happened to it.

The trail is read from the stores that already hold it, at query time, not logged as the
events flow: a per-event write at each stage would cost the streaming path a write per
event (10k/s at the scale Lily aims at) for a question an operator asks now and then. It
reads, with the tenant's key:
- the webhook inbox (received, not landed yet) and the staging area's batches (pending,
  applied or discarded): each copy's origin (Kafka `topic/partition/offset` or inbox entry),
  batch, and the Dagster run that took or applied the batch;
- the quarantine: the gate that rejected it and why;
- the hub's change log: the change and version the event made (its `source_event_id`);
- each target's delivery position and dead-letter queue: the deliveries of that change.

Applied batches stay until the run retention removes them; after that an applied event is
still found through the hub, without its origin.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

from lily_dagster.lib.envelope import event_id_of
from lily_dagster.lib.hub.local import HubTrail, LocalHub
from lily_dagster.lib.inbox.base import Inbox
from lily_dagster.lib.propagation import Position, position_path
from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster.lib.staging import StagingArea
from lily_dagster.lib.times import iso_utc
from lily_dagster.settings import Settings

# What became of the event, most final first (`status` of a trace).
STATUSES = ("applied", "quarantined", "pending", "received", "no_change", "discarded", "unknown")
_KAFKA_ORIGIN = re.compile(r"^kafka:(?P<topic>.+)/(?P<partition>\d+)/(?P<offset>\d+)")
_INBOX_PAGE = 10_000


@dataclass(frozen=True)
class Copy:
    """One arrival of the event: a Kafka message or an inbox entry, and its batch."""

    origin: str
    state: str  # received (still in the inbox) | pending | applied | discarded
    received_at: str | None = None
    batch_id: str | None = None
    source: str | None = None  # kafka | webhook | replay
    landed_at: str | None = None
    run_id: str | None = None  # the run that took (pending) or applied the batch
    qualified_name: str | None = None

    def as_dict(self) -> dict[str, Any]:
        found = _KAFKA_ORIGIN.match(self.origin)
        kafka = (
            {"kafka": {k: v if k == "topic" else int(v) for k, v in found.groupdict().items()}}
            if found
            else {}
        )
        return {k: v for k, v in {**self.__dict__, **kafka}.items() if v is not None}


@dataclass
class Trace:
    tenant: str
    event_id: str
    copies: list[Copy] = field(default_factory=list)
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    patched: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        states = {c.state for c in self.copies}
        if self.changes or self.patched:
            return "applied"
        for status, found in (
            ("quarantined", bool(self.quarantined)),
            ("pending", "pending" in states),
            ("received", "received" in states),
            ("no_change", "applied" in states),
            ("discarded", "discarded" in states),
        ):
            if found:
                return status
        return "unknown"

    def as_dict(self) -> dict[str, Any]:
        arrivals = len(self.copies) or len(self.quarantined)
        return {
            "tenant": self.tenant,
            "event_id": self.event_id,
            "status": self.status,
            "found": self.status != "unknown",
            # Sent more than once: one copy made the change, the others changed nothing.
            "duplicate": arrivals > 1,
            "copies": [c.as_dict() for c in self.copies],
            "quarantined": self.quarantined,
            "changes": self.changes,
            "partial_changes": self.patched,
            "records": self.records,
        }


def trace_event(
    settings: Settings,
    tenant: str,
    event_id: str,
    hub: LocalHub,
    inbox: Inbox | None,
    hours: float | None = None,
) -> dict[str, Any]:
    """The trail of `event_id` in `tenant` (see the module's docstring), as JSON-ready data;
    `hours`: only batches landed within that many hours are read (the time a trace takes
    grows with the batches kept)."""
    staging = StagingArea.from_settings(settings)
    trace = Trace(tenant, event_id, copies=_waiting(inbox, tenant, event_id) if inbox else [])
    since = time.time() - hours * 3600 if hours is not None else None
    trace.copies += landed_copies(staging, tenant, event_id, since)
    trace.quarantined = quarantined(QuarantineStore.from_settings(settings), tenant, event_id)
    names = sorted({c.qualified_name for c in trace.copies if c.qualified_name})
    found: HubTrail = hub.event_trail(tenant, event_id, names)
    trace.patched, trace.records = found.patched, found.current
    trace.changes = [
        {**_iso_times(change), "deliveries": deliveries(settings, tenant, change["seq"])}
        for change in found.changes
    ]
    return trace.as_dict()


def landed_copies(
    staging: StagingArea, tenant: str, event_id: str, since: float | None = None
) -> list[Copy]:
    """Every copy of the event in the tenant's batches (landed after `since`, a Unix time),
    in landing order."""
    copies: list[Copy] = []
    for state, path, frame in staging.batch_files(tenant, since):
        hits = _rows_of(frame, event_id)
        if hits.is_empty():
            continue
        manifest = staging.manifest(tenant, state, path.stem)
        run_id = staging.run_of(tenant, state, path.stem)
        copies += [
            Copy(
                origin=row["origin"],
                state=state,
                received_at=iso_utc(row["received_at"]),
                batch_id=path.stem,
                source=manifest.get("source"),
                landed_at=_landed_at(manifest),
                run_id=run_id,
                qualified_name=_qualified_name(row["value"]),
            )
            for row in hits.iter_rows(named=True)
        ]
    return sorted(copies, key=lambda c: c.landed_at or "")


def _rows_of(frame: pl.DataFrame, event_id: str) -> pl.DataFrame:
    """The landed rows whose payload carries `event_id`: a cheap byte search first, the
    JSON read only on the rows it finds (a batch holds thousands of other events)."""
    needle = event_id.encode("utf-8", "surrogatepass")
    maybe = frame.filter(pl.col("value").bin.contains(needle))
    return maybe.filter(
        pl.col("value").map_elements(lambda v: event_id_of(v) == event_id, return_dtype=pl.Boolean)
    )


def _qualified_name(value: bytes) -> str | None:
    try:
        payload = json.loads(value)
        name = payload["asset"]["qualified_name"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    return name if isinstance(name, str) else None


def _waiting(inbox: Inbox, tenant: str, event_id: str) -> list[Copy]:
    """The event's entries still in the webhook inbox, after what the sensor landed."""
    copies: list[Copy] = []
    cursor = inbox.consumer_cursor()
    while True:
        page = inbox.read(cursor, _INBOX_PAGE)
        copies += [
            Copy(
                origin=e.origin,
                state="received",
                received_at=iso_utc(datetime.fromtimestamp(e.received_at, UTC)),
                qualified_name=_qualified_name(e.payload),
            )
            for e in page.events
            if e.tenant == tenant and e.event_id == event_id
        ]
        if page.cursor is None or len(page.events) < _INBOX_PAGE:
            return copies
        cursor = page.cursor


def quarantined(store: QuarantineStore, tenant: str, event_id: str) -> list[dict[str, Any]]:
    """The tenant's quarantine entries of the event: gate, reason, detail, origin, when."""
    found = store.read(tenant).filter(pl.col("event_id") == event_id)
    return [
        {
            "reason": row["reason"],
            "detail": row["detail"],
            "origin": row["origin"],
            "quarantined_at": iso_utc(row["quarantined_at"]),
        }
        for row in found.sort("quarantined_at").iter_rows(named=True)
    ]


def deliveries(settings: Settings, tenant: str, seq: int) -> list[dict[str, Any]]:
    """Where change `seq` stands with each of the tenant's targets: `delivered`,
    `dead_lettered` (with the target's reason; `lily dlq replay` sends it again),
    `in_flight` or `pending`."""
    found = []
    for target in settings.config.targets_of(tenant):
        position = Position.load(position_path(settings.propagation_dir, tenant, target.name))
        dlq = QuarantineStore.from_settings(settings, settings.dlq_dir / target.name)
        dead = dlq.read(tenant).filter(pl.col("event_id") == f"change:{seq}")
        entry: dict[str, Any] = {"target": target.name, "status": _delivery(position, seq)}
        if dead.height:
            entry.update(status="dead_lettered", detail=dead["detail"][-1])
        found.append(entry)
    return found


def _delivery(position: Position, seq: int) -> str:
    if position.in_flight and position.in_flight[0] <= seq <= position.in_flight[1]:
        return "in_flight"
    return "delivered" if seq <= position.delivered else "pending"


def _iso_times(row: dict[str, Any]) -> dict[str, Any]:
    return {k: iso_utc(v) if isinstance(v, datetime) else v for k, v in row.items()}


def _landed_at(manifest: dict[str, Any]) -> str | None:
    """The manifest's landing time in the form of every other time here."""
    landed = manifest.get("landed_at")
    return iso_utc(datetime.fromisoformat(landed)) if isinstance(landed, str) else None
