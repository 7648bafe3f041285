"""`lily backfill --source FILE` without `--tenant`, from the outside: each envelope of a
multi-tenant file reaches the hub of the tenant it names, through that tenant's gates, exactly
as `lily backfill --tenant T` of the tenant's own rows; rows naming no tenant are kept with
their reason; a second run applies nothing; sharding needs a tenant."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lily_dagster_tests.contract import outside
from lily_dagster_tests.support.envelopes import envelope

TENANTS = ("acme", "globex")
SCHEMA = "default/snowflake/1700000000/DB/SCH"


def rows_of(tenant: str) -> list[str]:
    rows = [envelope(f"{SCHEMA}/T{i}", tenant=tenant) for i in range(4)]
    rows.append(envelope(f"{SCHEMA}/BAD", tenant=tenant, type_name="not a type"))
    return [json.dumps(r) for r in rows]


NO_TENANT = json.dumps({k: v for k, v in envelope(f"{SCHEMA}/X").items() if k != "tenant"})


def without_time(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        ({k: v for k, v in r.items() if k != "updated_at"} for r in records),
        key=lambda r: str(r["qualified_name"]),
    )


def test_a_multi_tenant_file_loads_each_tenant_as_its_own_backfill_would(tmp_path: Path) -> None:
    mixed = [line for pair in zip(*(rows_of(t) for t in TENANTS), strict=True) for line in pair]
    source = tmp_path / "estate.jsonl"
    source.write_text("\n".join([NO_TENANT, *mixed]) + "\n")
    routed_env = outside.clean_environment(LILY_HOME=str(tmp_path / "routed"))
    summary = json.loads(outside.lily_ok("backfill", "--source", str(source), env=routed_env))
    assert summary["unrouted"] == 1 and summary["rows_read"] == 11
    assert summary["applied"] == 8 and summary["quarantined"] == 3
    assert sorted(summary["tenants"]) == list(TENANTS)
    single_env = outside.clean_environment(LILY_HOME=str(tmp_path / "single"))
    for tenant in TENANTS:
        own = tmp_path / f"{tenant}.jsonl"
        own.write_text("\n".join(rows_of(tenant)) + "\n")
        outside.lily_ok("backfill", "--tenant", tenant, "--source", str(own), env=single_env)
        routed = outside.hub_export(routed_env, tenant)
        assert len(routed) == 4
        assert without_time(routed) == without_time(outside.hub_export(single_env, tenant))
        (bad,) = outside.quarantine_export(routed_env, tenant)
        assert bad["reason"] == "bad_type_name" and bad["raw"] == rows_of(tenant)[-1]
    (unrouted,) = outside.quarantine_export(routed_env, "_unrouted")
    assert (unrouted["reason"], unrouted["raw"]) == ("missing_field", NO_TENANT)
    again = json.loads(outside.lily_ok("backfill", "--source", str(source), env=routed_env))
    assert again["applied"] == 0 and all(t["batches"] == 0 for t in again["tenants"].values())


def test_sharding_a_multi_tenant_file_is_refused_in_one_line(tmp_path: Path) -> None:
    source = tmp_path / "estate.jsonl"
    source.write_text("\n".join(rows_of("acme")) + "\n")
    env = outside.clean_environment(LILY_HOME=str(tmp_path / "home"))
    proc = outside.lily("backfill", "--source", str(source), "--shards", "2", env=env)
    assert proc.returncode != 0 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert (
        line == "lily: error: --shards and --shard need --tenant (a multi-tenant load is one pass)"
    )
