"""CONTRACT.md §7 from outside: encryption at rest and tenant deletion.

A canary workload whose descriptions, owners, sample values and raw payloads carry marker
strings goes in through Kafka, the webhook receiver and `lily backfill`; some of it is
quarantined and some is dead-lettered by a refusing target. Then every byte of every file
under $LILY_HOME is searched for the markers (none may be found) while the exports still
show them. Then `lily tenant delete` shreds one tenant: a copy of its files taken before,
put back, cannot be read with anything left on disk, and the other tenant is untouched."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from lily_dagster_tests.contract import outside
from lily_dagster_tests.contract.outside import WebhookTarget

JWT_SECRET = "data-protection-hs256-secret-0123456789abcdef"
TARGET_SECRET = "data-protection-target-secret"
TOPIC = "protection.events"
TENANTS = ("acme", "globex")
CONNECTION = "default/snowflake/1700000000"
REFUSE_PATH = "/hooks/refuse"
# One marker per way in and per kind of content; none may be on disk in plaintext.
MARKERS = {
    "kafka": "CanaryKafka7c1d",
    "webhook": "CanaryHook7c1d",
    "backfill": "CanaryFile7c1d",
    "owner": "canary.owner7c1d@example.org",
    "sample": "CanarySample7c1d",
    "quarantined": "CanaryBad7c1d",
}


def envelope(tenant: str, via: str, i: int, **asset: Any) -> dict[str, Any]:
    attributes = {
        "description": f"{MARKERS[via]} holds the {i}th thing",
        "owner_users": [MARKERS["owner"], "someone-else"],
        "sample_values": [MARKERS["sample"], "plain"],
    }
    return outside.table_envelope(tenant, via, i, CONNECTION, attributes=attributes, **asset)


def bad_envelope(tenant: str, i: int) -> dict[str, Any]:
    """Quarantined (unknown op), its raw payload carrying the markers."""
    env = envelope(tenant, "kafka", 900 + i)
    env["op"] = "explode"
    env["asset"]["attributes"]["description"] = f"{MARKERS['quarantined']} never reaches a hub"
    return env


@dataclass
class Stack:
    root: Path
    home: Path
    env: dict[str, str]
    target: WebhookTarget
    exports: dict[str, str]  # tenant → `lily hub export` before anything was deleted
    quarantine: dict[str, str]
    dead_letters: dict[str, str]  # tenant → `lily dlq list` of the refusing target


def _config(target: WebhookTarget) -> dict[str, Any]:
    return outside.refusing_target_config(target, TENANTS, REFUSE_PATH, "PROTECTION_TARGET_SECRET")


def _feed(stack_env: dict[str, str], root: Path, webhook_url: str) -> None:
    kafka = [envelope(t, "kafka", i) for t in TENANTS for i in range(20)]
    kafka += [bad_envelope(t, i) for t in TENANTS for i in range(3)]
    outside.produce(
        stack_env["LILY_KAFKA_BOOTSTRAP"],
        TOPIC,
        [(e["asset"]["qualified_name"].encode(), json.dumps(e).encode()) for e in kafka],
    )
    with httpx.Client(timeout=30) as client:
        for tenant in TENANTS:
            token = outside.token(stack_env, tenant, "lily:ingest")
            body = [envelope(tenant, "webhook", i) for i in range(10)]
            answer = client.post(
                f"{webhook_url}/v1/tenants/{tenant}/events",
                content=json.dumps(body).encode(),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            assert answer.status_code == 202, answer.text
    for tenant in TENANTS:
        source = root / f"backfill-{tenant}.jsonl"
        source.write_text(
            "".join(json.dumps(envelope(tenant, "backfill", i)) + "\n" for i in range(30))
        )
        outside.lily_ok("backfill", "--tenant", tenant, "--source", str(source), env=stack_env)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("protection")
    with outside.small_stack(
        root,
        TOPIC,
        _config,
        REFUSE_PATH,
        LILY_JWT_HS256_SECRET=JWT_SECRET,
        PROTECTION_TARGET_SECRET=TARGET_SECRET,
    ) as small:
        env, target = small.env, small.target
        _feed(env, root, small.api)
        run = outside.run_until_idle(env, 240)
        assert run.returncode == 0, run.stderr[-3000:]
        yield Stack(
            root=root,
            home=root / "home",
            env=env,
            target=target,
            exports={t: outside.lily_ok("hub", "export", "--tenant", t, env=env) for t in TENANTS},
            quarantine={
                t: outside.lily_ok("quarantine", "export", "--tenant", t, env=env) for t in TENANTS
            },
            dead_letters={
                t: outside.lily_ok("dlq", "list", "--tenant", t, "--target", "refusing", env=env)
                for t in ("acme",)
            },
        )


def decoded_views(path: Path, data: bytes) -> list[bytes]:
    """The file's bytes, and what a generic tool reads out of it where the format may
    compress its values (Parquet pages, DuckDB's string compression)."""
    views = [data]
    if data.startswith(b"PAR1"):
        import pyarrow.parquet as pq

        views.append(json.dumps(pq.read_table(path).to_pylist(), default=str).encode())
    elif data[8:12] == b"DUCK":
        import duckdb

        copy = path.with_name(f".{path.name}.scan")  # a copy: the file may be open elsewhere
        shutil.copy2(path, copy)
        try:
            con = duckdb.connect(str(copy), read_only=True)
            tables = [
                t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
            ]
            views += [str(con.execute(f'SELECT * FROM "{t}"').fetchall()).encode() for t in tables]
            con.close()
        finally:
            copy.unlink(missing_ok=True)
    return views


def plaintext_hits(folder: Path, markers: dict[str, str]) -> dict[str, list[str]]:
    """file (relative) → the markers found in its bytes (UTF-8 or UTF-16) or in the values a
    generic reader decodes from it (Parquet, DuckDB)."""
    hits: dict[str, list[str]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        views = decoded_views(path, path.read_bytes())
        found = [
            kind
            for kind, marker in markers.items()
            if any(marker.encode() in v or marker.encode("utf-16-le") in v for v in views)
        ]
        if found:
            hits[str(path.relative_to(folder))] = found
    return hits


def test_the_exports_show_the_canary_content(stack: Stack) -> None:
    for tenant in TENANTS:
        records = outside.json_lines(stack.exports[tenant])
        descriptions = " ".join(str(r["attributes"].get("description")) for r in records)
        for via in ("kafka", "webhook", "backfill"):
            assert MARKERS[via] in descriptions, (tenant, via)
        owners = [o for r in records for o in r["attributes"].get("owner_users") or []]
        assert MARKERS["owner"] in owners
        assert MARKERS["sample"] in json.dumps(records)
        assert MARKERS["quarantined"] in stack.quarantine[tenant]
    assert (
        MARKERS["kafka"] in stack.dead_letters["acme"]
        or MARKERS["webhook"] in (stack.dead_letters["acme"])
    ), stack.dead_letters["acme"][:2000]


def test_no_file_under_lily_home_holds_any_canary_in_plaintext(stack: Stack) -> None:
    files = [p for p in stack.home.rglob("*") if p.is_file()]
    assert len(files) > 10  # hub, staging, inbox, quarantine, dead letters, Dagster storage
    assert plaintext_hits(stack.home, MARKERS) == {}


def test_every_tenant_has_its_own_wrapped_data_key(stack: Stack) -> None:
    keys = {p.stem: json.loads(p.read_text()) for p in (stack.home / "keys" / "tenants").glob("*")}
    assert set(TENANTS) <= set(keys)
    assert len({k["wrapped"] for k in keys.values()}) == len(keys)
    master = stack.home / "keys" / "master.key"
    assert master.stat().st_mode & 0o077 == 0  # generated once, readable by its owner only


def test_tenant_delete_wants_yes_and_a_known_tenant(stack: Stack) -> None:
    refused = outside.lily("tenant", "delete", "--tenant", "globex", env=stack.env)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    unknown = outside.lily("tenant", "delete", "--tenant", "nobody", "--yes", env=stack.env)
    assert unknown.returncode == 2 and "nobody" in unknown.stderr
    assert (
        outside.lily_ok("hub", "export", "--tenant", "globex", env=stack.env)
        == (stack.exports["globex"])
    )


def _tenant_files(home: Path, tenant: str) -> list[Path]:
    return [
        p
        for p in home.rglob("*")
        if p.is_file() and (tenant in p.relative_to(home).parts or p.stem == tenant)
    ]


def test_tenant_delete_shreds_the_tenant_and_leaves_the_others(stack: Stack) -> None:
    backup = stack.root / "globex-backup"
    for path in _tenant_files(stack.home, "globex"):
        if "keys" in path.relative_to(stack.home).parts:
            continue  # the backup an attacker has: the tenant's data, not its key
        copy = backup / path.relative_to(stack.home)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, copy)
    assert (backup / "hub" / "globex.duckdb").is_file()

    deleted = json.loads(
        outside.lily_ok("tenant", "delete", "--tenant", "globex", "--yes", env=stack.env)
    )
    assert deleted["tenant"] == "globex" and deleted["key_destroyed"] is True
    assert not (stack.home / "keys" / "tenants" / "globex.json").exists()
    assert [p for p in _tenant_files(stack.home, "globex") if "audit" not in p.parts] == []
    assert (
        outside.lily_ok("hub", "export", "--tenant", "acme", env=stack.env)
        == (stack.exports["acme"])
    )
    entries = outside.json_lines(outside.lily_ok("audit", "export", "--global", env=stack.env))
    assert any(e["action"] == "tenant.delete" and e["resource"] == "tenant/globex" for e in entries)

    # The forgotten backup, put back: nothing left on disk opens it.
    shutil.copytree(backup, stack.home, dirs_exist_ok=True)
    restored = outside.lily("hub", "export", "--tenant", "globex", env=stack.env)
    assert restored.returncode != 0
    assert all(m not in restored.stdout + restored.stderr for m in MARKERS.values())
    assert plaintext_hits(backup, MARKERS) == {}
