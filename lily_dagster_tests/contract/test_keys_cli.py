"""CONTRACT.md §7, the keys, from outside (the `lily` commands, the environment and the
files only): encryption is on with nothing configured, `lily keys status` says which key
wraps each tenant's data key, a wrong, missing or malformed LILY_MASTER_KEY (or LILY_KMS)
fails a command at start in one line naming it and changes nothing under $LILY_HOME, and
the master key is changed with `lily keys rotate` given the previous one."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from lily_dagster_tests.contract import outside
from lily_dagster_tests.support.envelopes import envelope

KEY_A = "0a" * 32
KEY_B = "0b" * 32
MARKER = "canary-7f3e"
TENANTS = ("acme", "globex")


def estate(tenant: str) -> str:
    lines = []
    for n in range(3):
        body = envelope(
            f"default/snowflake/1700000000/DB/SALES/T{n}",
            event_id=f"{tenant}-{n}",
            tenant=tenant,
            attributes={"description": f"{MARKER} {tenant} table {n}", "owner_users": ["jane"]},
        )
        lines.append(json.dumps(body))
    return "\n".join(lines) + "\n"


def backfill(env: dict[str, str], root: Path) -> None:
    for tenant in TENANTS:
        source = root / f"{tenant}.jsonl"
        source.write_text(estate(tenant))
        outside.lily_ok("backfill", "--tenant", tenant, "--source", str(source), env=env)


def tree(home: Path) -> dict[str, str]:
    return {
        str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(home.rglob("*"))
        if p.is_file()
    }


def one_line_error(proc: Any) -> str:
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("lily: error: "), lines[0]
    return str(lines[0])


def status(env: dict[str, str]) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(outside.lily_ok("keys", "status", env=env))
    return value


def exports(env: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    return {t: outside.hub_export(env, t) for t in TENANTS}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def test_encryption_is_on_with_nothing_configured(home: Path, tmp_path: Path) -> None:
    env = outside.clean_environment(LILY_HOME=str(home))
    backfill(env, tmp_path)
    master = home / "keys" / "master.key"
    assert stat.S_IMODE(master.stat().st_mode) == 0o600
    shown = status(env)
    assert shown["encryption"] == "on" and shown["kms"] == "local"
    assert [t["tenant"] for t in shown["tenants"]] == list(TENANTS)
    assert all(t["kek"] == shown["key_id"] and t["current"] for t in shown["tenants"])
    # No key material in what status prints.
    text = json.dumps(shown)
    assert master.read_text().strip() not in text
    for tenant in TENANTS:
        key_file = json.loads((home / "keys" / "tenants" / f"{tenant}.json").read_text())
        assert key_file["wrapped"] not in text
    # The hub's files hold no description or owner in plaintext; the export shows them.
    for path in (home / "hub").rglob("*"):
        if path.is_file():
            assert MARKER.encode() not in path.read_bytes(), path
    assert all(MARKER in r["attributes"]["description"] for r in exports(env)["acme"])


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose tenants' data was written with LILY_MASTER_KEY=KEY_A (the cases that
    use it change nothing, which each checks)."""
    root = tmp_path_factory.mktemp("keys-written")
    backfill(outside.clean_environment(LILY_HOME=str(root / "home"), LILY_MASTER_KEY=KEY_A), root)
    return root


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({"LILY_MASTER_KEY": KEY_B}, ["LILY_MASTER_KEY is not the key", "acme"]),
        ({}, ["LILY_MASTER_KEY is not set"]),
        ({"LILY_MASTER_KEY": "not-a-key"}, ["LILY_MASTER_KEY", "openssl rand -hex 32"]),
        ({"LILY_MASTER_KEY": KEY_A, "LILY_KMS": "bogus"}, ["LILY_KMS='bogus'"]),
    ],
    ids=["wrong", "missing", "malformed", "bogus-kms"],
)
def test_a_bad_key_fails_every_command_at_start_and_changes_nothing(
    setting: dict[str, str], expected: list[str], written: Path
) -> None:
    home = written / "home"
    before = tree(home)
    bad = outside.clean_environment(LILY_HOME=str(home), **setting)
    source = str(written / "acme.jsonl")
    for args in (
        ("hub", "export", "--tenant", "acme"),
        ("backfill", "--tenant", "initech", "--source", source),  # a new tenant too
    ):
        line = one_line_error(outside.lily(*args, env=bad))
        assert all(part in line for part in expected), (args, line)
    assert tree(home) == before
    good = outside.clean_environment(LILY_HOME=str(home), LILY_MASTER_KEY=KEY_A)
    assert exports(good)["acme"]  # the right key still reads everything


def test_the_master_key_changes_by_rotation_given_the_previous_one(
    home: Path, tmp_path: Path
) -> None:
    old = outside.clean_environment(LILY_HOME=str(home), LILY_MASTER_KEY=KEY_A)
    backfill(old, tmp_path)
    before = exports(old)
    new = outside.clean_environment(LILY_HOME=str(home), LILY_MASTER_KEY=KEY_B)
    untouched = tree(home)
    # Without the previous key nothing can be re-wrapped: one line, nothing changed.
    line = one_line_error(outside.lily("keys", "rotate", "--all", env=new))
    assert "LILY_PREVIOUS_MASTER_KEY" in line
    assert tree(home) == untouched

    rotating = {**new, "LILY_PREVIOUS_MASTER_KEY": KEY_A}
    rotated = json.loads(outside.lily_ok("keys", "rotate", "--all", env=rotating))["rotated"]
    assert [r["tenant"] for r in rotated] == list(TENANTS)
    new_id = status(new)["key_id"]
    assert all(r["to"] == new_id and r["from"] != new_id for r in rotated)
    # From now on the new key alone reads everything; the old one is refused.
    assert exports(new) == before
    assert "LILY_MASTER_KEY is not the key" in one_line_error(
        outside.lily("hub", "export", "--tenant", "acme", env=old)
    )
    audit = outside.json_lines(outside.lily_ok("audit", "export", "--tenant", "acme", env=new))
    assert [e["status"] for e in audit if e.get("action") == "keys.rotate"] == ["succeeded"]


def test_rotating_one_tenant_with_the_same_key_rewraps_it(home: Path, tmp_path: Path) -> None:
    env = outside.clean_environment(LILY_HOME=str(home), LILY_MASTER_KEY=KEY_A)
    backfill(env, tmp_path)
    key_file = home / "keys" / "tenants" / "acme.json"
    wrapped = json.loads(key_file.read_text())["wrapped"]
    rotated = json.loads(outside.lily_ok("keys", "rotate", "--tenant", "acme", env=env))
    assert [r["tenant"] for r in rotated["rotated"]] == ["acme"]
    assert json.loads(key_file.read_text())["wrapped"] != wrapped
    assert exports(env)["acme"] and exports(env)["globex"]
    line = one_line_error(outside.lily("keys", "rotate", "--tenant", "initech", env=env))
    assert "'initech' has no data key" in line


def test_a_generated_key_is_replaced_by_setting_lily_master_key_and_rotating(
    home: Path, tmp_path: Path
) -> None:
    generated = outside.clean_environment(LILY_HOME=str(home))
    backfill(generated, tmp_path)
    before = exports(generated)
    chosen = outside.clean_environment(LILY_HOME=str(home), LILY_MASTER_KEY=KEY_B)
    assert "LILY_MASTER_KEY is not the key" in one_line_error(
        outside.lily("hub", "export", "--tenant", "acme", env=chosen)
    )
    outside.lily_ok("keys", "rotate", "--all", env=chosen)  # from the generated key
    assert exports(chosen) == before
