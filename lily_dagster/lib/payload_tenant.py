"""Which tenant a raw payload names: its `tenant` field, read as the envelope decoder reads it.
One rule for every router (Kafka messages, multi-tenant backfill files)."""

from __future__ import annotations

import json
from typing import NamedTuple

from lily_dagster.lib.reasons import Reason
from lily_dagster.settings import is_tenant


class NamedTenant(NamedTuple):
    """A payload's tenant, or why it names none (reason, detail), and the `event_id` it names
    when it is a JSON object naming one."""

    tenant: str | None
    reason: Reason | None
    detail: str
    event_id: str | None


def payload_tenant(value: bytes | str) -> NamedTenant:
    try:
        body = json.loads(value)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        return NamedTenant(None, Reason.MALFORMED_JSON, f"body: {exc}", None)
    if not isinstance(body, dict):
        return NamedTenant(None, Reason.MALFORMED_JSON, "body: Input should be an object", None)
    tenant = body.get("tenant")
    event_id = body.get("event_id") if isinstance(body.get("event_id"), str) else None
    if tenant is None:
        return NamedTenant(None, Reason.MISSING_FIELD, "tenant: Field required", event_id)
    if not isinstance(tenant, str):
        detail = "tenant: Input should be a valid string"
        return NamedTenant(None, Reason.WRONG_TYPE, detail, event_id)
    if not is_tenant(tenant):
        detail = f"tenant {tenant[:80]!r} is not a valid tenant"
        return NamedTenant(None, Reason.BAD_TENANT, detail, event_id)
    return NamedTenant(tenant, None, "", event_id)
