"""Freshness of a tenant's hub (lib/freshness.py): the age of its latest change against its
threshold, at the boundary too; no change yet is `no_data`, not stale; the description
names the stale tenants first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lily_dagster.lib.freshness import TenantFreshness, assess, describe, last_change_at
from lily_dagster.lib.hub.local import HubLockedError, LocalHub
from lily_dagster.settings import FreshnessConfig
from lily_dagster_tests.support.envelopes import ev
from lily_dagster_tests.support.frames import frame

pytestmark = pytest.mark.unit
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def at(seconds_ago: float | None, max_age_s: int = 3600, tenant: str = "acme") -> TenantFreshness:
    last = None if seconds_ago is None else NOW - timedelta(seconds=seconds_ago)
    return TenantFreshness(tenant, last, max_age_s, NOW)


def test_status_at_and_around_the_threshold() -> None:
    assert at(3599).status == "fresh"
    assert at(3600).status == "fresh"  # exactly the threshold: still fresh
    assert at(3601).status == "stale"
    assert at(None).status == "no_data" and at(None).age_s is None
    assert at(-30).age_s == 0.0  # a clock a little ahead is not negative age


def test_per_tenant_thresholds() -> None:
    config = FreshnessConfig(max_age_s=600, tenants={"acme": 7200})
    assert (config.max_age_of("acme"), config.max_age_of("globex")) == (7200, 600)


def test_the_description_names_stale_tenants_first() -> None:
    results = [at(7200, tenant="acme"), at(10, tenant="globex"), at(None, tenant="initech")]
    assert describe(results) == "stale: acme (2.0 h); no data yet: initech"
    assert describe([at(1)]) == "the tenant is fresh"
    assert describe([at(1), at(2, tenant="globex")]) == "all 2 tenants fresh"
    assert describe([]) == "no tenants yet"
    assert at(7200).as_dict() == {
        "status": "stale",
        "last_change_at": "2026-12-05T10:00:00+00:00",
        "age_s": 7200,
        "max_age_s": 3600,
    }


def test_a_hub_gives_its_latest_change_time(tmp_path: Path) -> None:
    hub = LocalHub(tmp_path)
    assert last_change_at(hub, "acme") is None
    hub.upsert("acme", frame([ev("e1", "db/t1", 1)]), now=NOW - timedelta(hours=3))
    hub.upsert("acme", frame([ev("e2", "db/t2", 2)]), now=NOW - timedelta(hours=1))
    assert last_change_at(hub, "acme") == NOW - timedelta(hours=1)
    (acme, ghost) = assess(hub, ["ghost", "acme"], FreshnessConfig(max_age_s=1800), NOW)
    assert (acme.tenant, acme.status, ghost.status) == ("acme", "stale", "no_data")


class BusyHub(LocalHub):
    """A hub whose one tenant a writer holds past the lock retries (a long backfill)."""

    def last_change(self, tenant: str) -> int:
        if tenant == "busy":
            raise HubLockedError(f"{tenant}.duckdb stayed locked")
        return super().last_change(tenant)


def test_a_hub_held_by_a_writer_is_unknown_for_that_tenant_only(tmp_path: Path) -> None:
    hub = BusyHub(tmp_path)
    hub.upsert("acme", frame([ev("e1", "db/t1", 1)]), now=NOW - timedelta(hours=3))
    busy, acme = assess(hub, ["busy", "acme"], FreshnessConfig(max_age_s=3600), NOW)[::-1]
    assert (busy.status, acme.status) == ("unknown", "stale")
    assert "stayed locked" in busy.as_dict()["unreadable"]
    assert describe([acme, busy]) == "stale: acme (3.0 h); hub busy, not read: busy"
