"""How Lily writes a moment in JSON it prints or exports: RFC 3339 in UTC with `Z`
(contract §1's `event_time` form), microseconds only when not zero."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(value: datetime | None) -> str | None:
    """`value` in UTC as `2026-11-23T10:00:00Z` (None stays None)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def iso_utc_millis(seconds: float) -> str:
    """A Unix time in UTC to the millisecond, as `2026-11-23T10:00:00.000Z` (log lines,
    vendor timestamps)."""
    return (
        datetime.fromtimestamp(seconds, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
