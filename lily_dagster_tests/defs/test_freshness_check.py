"""hub_records_freshness on a real instance, launched as the schedule launches it
(freshness_job): a tenant whose hub last changed two days ago is stale and named in a WARN
result, one that changed a minute ago is fresh, a tenant registered without data yet is said
so without failing the check, and a per-tenant threshold overrides the default; a bad
threshold fails the code location's load naming the setting. Also: the check is not planned
in the streaming runs (each planned check costs events per run)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetCheckKey, AssetCheckSeverity, AssetKey, instance_for_test

from lily_dagster.definitions import defs as load_definitions
from lily_dagster.defs.partitions import TENANTS
from lily_dagster.lib.crypto import ciphers_of
from lily_dagster.lib.hub.local import LocalHub
from lily_dagster.settings import ConfigError, Settings
from lily_dagster_tests.support.envelopes import ev
from lily_dagster_tests.support.frames import frame

FRESHNESS = AssetCheckKey(AssetKey("hub_records"), "hub_records_freshness")


def change_hub(tenant: str, ago: timedelta) -> None:
    settings = Settings.from_env()
    hub = LocalHub(settings.home / "hub", ciphers=ciphers_of(settings))
    hub.upsert(
        tenant, frame([ev(f"{tenant}-1", f"db/sch/{tenant}", 1)]), now=datetime.now(UTC) - ago
    )


def run_check(tenants: list[str]) -> tuple[bool, Any, dict[str, Any]]:
    job = load_definitions().resolve_job_def("freshness_job")
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(TENANTS, tenants)
        outcome = job.execute_in_process(instance=instance)
        assert outcome.success  # a stale tenant warns; it does not fail the run
        (evaluation,) = outcome.get_asset_check_evaluations()
        assert evaluation.asset_check_key == FRESHNESS
        metadata = {k: v.value for k, v in evaluation.metadata.items()}
        return evaluation.passed, evaluation, metadata


def test_stale_fresh_and_empty_tenants(lily_home: Path) -> None:
    change_hub("acme", timedelta(days=2))
    change_hub("globex", timedelta(minutes=1))
    passed, evaluation, metadata = run_check(["acme", "globex", "initech"])
    assert not passed and evaluation.severity == AssetCheckSeverity.WARN
    assert metadata["tenants_stale"] == "acme" and metadata["tenants_without_data"] == 1
    per_tenant = metadata["tenants"]
    assert {t: r["status"] for t, r in per_tenant.items()} == {
        "acme": "stale",
        "globex": "fresh",
        "initech": "no_data",
    }
    assert 47 * 3600 < per_tenant["acme"]["age_s"] < 49 * 3600
    assert per_tenant["acme"]["max_age_s"] == 86_400
    description = evaluation.description
    assert description.startswith("stale: acme (48.0 h)") and "no data yet: initech" in description


def test_a_per_tenant_threshold_overrides_the_default(
    lily_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "lily.yaml"
    config.write_text("freshness: {max_age_s: 3600, tenants: {acme: 259200}}\n")
    monkeypatch.setenv("LILY_CONFIG", str(config))
    change_hub("acme", timedelta(days=2))  # within its three days
    change_hub("globex", timedelta(hours=2))  # past the default hour
    passed, _, metadata = run_check(["acme", "globex"])
    assert not passed and metadata["tenants_stale"] == "globex"
    assert metadata["tenants"]["acme"]["max_age_s"] == 259_200


def test_with_every_tenant_fresh_it_passes(lily_home: Path) -> None:
    change_hub("acme", timedelta(seconds=5))
    passed, evaluation, _ = run_check(["acme"])
    assert passed and evaluation.description == "the tenant is fresh"


@pytest.mark.parametrize(
    ("yaml", "named"),
    [
        ("freshness: {max_age_s: 10}", "freshness.max_age_s"),
        ("freshness: {tenants: {acme: -1}}", "freshness.tenants.acme"),
        ("freshness: {max_age: 3600}", "freshness.max_age"),
    ],
)
def test_a_bad_threshold_fails_at_load_naming_it(
    lily_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, yaml: str, named: str
) -> None:
    config = tmp_path / "lily.yaml"
    config.write_text(yaml + "\n")
    monkeypatch.setenv("LILY_CONFIG", str(config))
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_definitions()


def test_the_streaming_runs_do_not_plan_it(lily_home: Path) -> None:
    defs = load_definitions()
    for name in ("tenant_ingest_job", "quarantine_replay_job"):
        planned = defs.resolve_job_def(name).asset_layer.asset_graph.asset_check_keys
        assert FRESHNESS not in planned, name
