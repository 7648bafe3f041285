"""PII redaction (CONTRACT.md §6): what a caller without `lily:read:pii` sees of a record
classified `PII`, `PII:*` or `GDPR:*`."""

from __future__ import annotations

from typing import Any

import polars as pl

REDACTED = "[redacted]"
# Structure, not content: kept so that a redacted column still sits in its table.
KEPT_ATTRIBUTES = frozenset({"parent_qualified_name", "data_type", "order", "certificate_status"})


def is_sensitive(classifications: Any) -> bool:
    return any(
        c == "PII" or c.startswith(("PII:", "GDPR:"))
        for c in classifications or ()
        if isinstance(c, str)
    )


def sensitive() -> pl.Expr:
    """`is_sensitive` of a records frame's `classifications`, as an expression."""
    tags = pl.col("classifications").fill_null([])
    return tags.list.eval(
        (pl.element() == "PII")
        | pl.element().str.starts_with("PII:")
        | pl.element().str.starts_with("GDPR:")
    ).list.any()


def redact(record: dict[str, Any]) -> dict[str, Any]:
    """`record` (a hub export record or a change) as a caller without the PII scope sees it:
    a copy whose attributes but the structural ones read `[redacted]` when it is sensitive."""
    if not is_sensitive(record.get("classifications")):
        return record
    attributes = record.get("attributes") or {}
    return {
        **record,
        "attributes": {k: (v if k in KEPT_ATTRIBUTES else REDACTED) for k, v in attributes.items()},
    }
