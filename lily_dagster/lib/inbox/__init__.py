"""The webhook inbox: where an accepted event is stored before the receiver answers 202.

`base.py` holds the `Inbox` interface and the shared types; each backend is one module
(`sqlite.py`, the embedded default; `s3.py`, for production). `open_inbox` picks the one
LILY_INBOX names and imports it only then. The backends import `base` alone, never this
package, so nothing here imports in a cycle.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from lily_dagster.lib.crypto import ciphers_of
from lily_dagster.lib.inbox.base import (
    AppendResult,
    Inbox,
    InboxEvent,
    InboxPage,
    StoredEvent,
    landed_frame_of,
)
from lily_dagster.settings import Settings


def open_inbox(settings: Settings) -> Inbox:
    """The inbox LILY_INBOX names: `sqlite` (default, under $LILY_HOME) or `s3://bucket/prefix`,
    its payloads sealed with each event's tenant cipher."""
    ciphers = ciphers_of(settings)
    if settings.inbox.startswith("s3://"):
        from lily_dagster.lib.inbox.s3 import S3Inbox

        return S3Inbox.from_uri(settings.inbox, ciphers)
    from lily_dagster.lib.inbox.sqlite import SqliteInbox

    return SqliteInbox(settings.inbox_path, ciphers)


def inbox_exists(settings: Settings) -> bool:
    return settings.inbox.startswith("s3://") or settings.inbox_path.exists()


@contextmanager
def existing_inbox(settings: Settings) -> Iterator[Inbox | None]:
    """The inbox, closed afterwards; None when there is none (no event was ever received)."""
    if not inbox_exists(settings):
        yield None
        return
    inbox = open_inbox(settings)
    try:
        yield inbox
    finally:
        inbox.close()


__all__ = [
    "AppendResult",
    "Inbox",
    "InboxEvent",
    "InboxPage",
    "StoredEvent",
    "existing_inbox",
    "inbox_exists",
    "landed_frame_of",
    "open_inbox",
]
