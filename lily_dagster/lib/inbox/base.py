"""The inbox interface and the types every backend shares.

The inbox is where an accepted webhook event is stored before the receiver answers 202;
the inbox sensor lands what it holds. Positions are opaque strings, ordered; each backend
(`sqlite.py`, `s3.py`) says what its positions are. A backend seals each payload with its
event's tenant cipher (`Ciphers`); tenants, event ids and sources stay plaintext.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import polars as pl

from lily_dagster.lib.gdpr.subject import Subject
from lily_dagster.lib.staging import landed_frame


@dataclass(frozen=True)
class InboxEvent:
    tenant: str
    event_id: str
    payload: bytes  # the envelope, JSON
    source: str  # "tenants-api", "atlan", "monte-carlo", ...


@dataclass(frozen=True)
class StoredEvent:
    seq: int  # order within the inbox (per object for object-store inboxes)
    tenant: str
    event_id: str
    payload: bytes
    source: str
    received_at: float
    # Where it is stored, unique across the inbox (object-store inboxes); default "#<seq>".
    ref: str = ""

    @property
    def origin(self) -> str:
        return f"webhook:{self.ref or self.seq}"


@dataclass(frozen=True)
class AppendResult:
    stored: int  # new entries
    duplicates: int  # event_ids the inbox already held


@dataclass(frozen=True)
class InboxPage:
    events: list[StoredEvent]
    cursor: str | None  # position after these events; None when there were none


class Inbox(Protocol):
    """Durable, ordered store of accepted events. Positions are opaque strings, ordered."""

    def append(self, events: Sequence[InboxEvent]) -> Future[AppendResult]:
        """Store durably; the future resolves once the events are committed."""
        ...

    def read(self, after: str | None, limit: int) -> InboxPage:
        """Events after position `after` (None: from the start), oldest first."""
        ...

    def pending(self, after: str | None) -> int:
        """How many entries wait after `after` (events, or requests for object stores)."""
        ...

    def position(self) -> str | None:
        """The newest position written."""
        ...

    def consumer_cursor(self) -> str | None:
        """Where the inbox sensor has landed up to (for the depth metric)."""
        ...

    def set_consumer_cursor(self, cursor: str) -> None: ...

    def erase_subject(self, tenant: str, subject: Subject, dry_run: bool = False) -> int:
        """Erase `subject` from the payloads of the tenant's events; how many mentioned it
        (dry_run: would be rewritten)."""
        ...

    def forget_tenant(self, tenant: str) -> int:
        """Remove every event of the tenant (`lily tenant delete`); how many there were."""
        ...

    def close(self) -> None: ...


def completed(result: AppendResult) -> Future[AppendResult]:
    """A future already resolved with `result` (an append of nothing)."""
    future: Future[AppendResult] = Future()
    future.set_result(result)
    return future


def landed_frame_of(events: Sequence[StoredEvent]) -> pl.DataFrame:
    """Inbox entries in the staging area's landed format."""
    return landed_frame(
        [e.origin for e in events],
        [e.payload for e in events],
        [datetime.fromtimestamp(e.received_at, UTC) for e in events],
    )
