"""Freshness of each tenant's hub: how long since it last changed, against the tenant's
threshold (`freshness:` of LILY_CONFIG). Read by the `hub_records_freshness` check.

A tenant's freshness is the time of its hub's latest change (the change log), not of the
latest `hub_records` run: in a streaming pipeline a tenant without new events is not run at
all, and a run that only saw events already applied changed nothing, so neither says when
the tenant's metadata last moved."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from lily_dagster.lib.hub.base import MetadataHub
from lily_dagster.lib.hub.local import HubLockedError
from lily_dagster.settings import FreshnessConfig

Status = Literal["fresh", "stale", "no_data", "unknown"]


@dataclass(frozen=True)
class TenantFreshness:
    tenant: str
    last_change_at: datetime | None  # None: its hub has no change yet
    max_age_s: int
    now: datetime
    unreadable: str | None = None  # why the hub could not be read now (status unknown)

    @property
    def age_s(self) -> float | None:
        if self.last_change_at is None:
            return None
        return max(0.0, (self.now - self.last_change_at).total_seconds())

    @property
    def status(self) -> Status:
        age = self.age_s
        if self.unreadable is not None:
            return "unknown"
        if age is None:
            return "no_data"
        return "stale" if age > self.max_age_s else "fresh"

    def as_dict(self) -> dict[str, Any]:
        age = self.age_s
        return {
            "status": self.status,
            "last_change_at": self.last_change_at.isoformat() if self.last_change_at else None,
            "age_s": round(age) if age is not None else None,
            "max_age_s": self.max_age_s,
            **({"unreadable": self.unreadable} if self.unreadable else {}),
        }


def last_change_at(hub: MetadataHub, tenant: str) -> datetime | None:
    """When the tenant's hub last changed (None: never)."""
    last = hub.last_change(tenant)
    if last < 1:
        return None
    latest = hub.changes(tenant, last - 1, 1)
    return latest.get_column("changed_at")[0] if latest.height else None


def assess(
    hub: MetadataHub, tenants: Iterable[str], config: FreshnessConfig, now: datetime
) -> list[TenantFreshness]:
    return [_assess(hub, t, config.max_age_of(t), now) for t in sorted(tenants)]


def _assess(hub: MetadataHub, tenant: str, max_age_s: int, now: datetime) -> TenantFreshness:
    """One tenant's freshness; a hub a writer holds past the lock retries (a long backfill)
    is `unknown` for that tenant, not a failure of every tenant's check."""
    try:
        return TenantFreshness(tenant, last_change_at(hub, tenant), max_age_s, now)
    except HubLockedError as exc:
        return TenantFreshness(tenant, None, max_age_s, now, unreadable=str(exc))


def describe(results: list[TenantFreshness]) -> str:
    """One line an operator reads on the check: the stale tenants (with their age) first."""
    stale = [r for r in results if r.status == "stale"]
    named = {s: [r.tenant for r in results if r.status == s] for s in ("no_data", "unknown")}
    parts = [
        f"stale: {', '.join(f'{r.tenant} ({_hours(r.age_s)} h)' for r in stale)}" if stale else "",
        f"no data yet: {', '.join(named['no_data'])}" if named["no_data"] else "",
        f"hub busy, not read: {', '.join(named['unknown'])}" if named["unknown"] else "",
    ]
    if any(parts):
        return "; ".join(p for p in parts if p)
    return {0: "no tenants yet", 1: "the tenant is fresh"}.get(
        len(results), f"all {len(results)} tenants fresh"
    )


def _hours(seconds: float | None) -> str:
    return f"{(seconds or 0) / 3600:.1f}"
