"""The `lily` console script as a user runs it: real processes, a real daemon and broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lily_dagster.lib.broker import free_port, produce
from lily_dagster.lib.demo import generate_demo
from lily_dagster_tests.conftest import AtlanEmulator
from lily_dagster_tests.support.receivers import RecordingReceiver

LILY = [sys.executable, "-m", "lily_dagster.cli"]


def lily(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*LILY, *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )


def test_demo_processes_every_tenant_to_the_contracts_state(tmp_path: Path) -> None:
    env = {"LILY_HOME": str(tmp_path / "home")}
    env_without_kafka = {k: v for k, v in os.environ.items() if k != "LILY_KAFKA_BOOTSTRAP"}
    proc = subprocess.run(
        [*LILY, "demo", "--tables", "3"],
        capture_output=True,
        text=True,
        env={**env_without_kafka, **env},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["ok"] is True
    assert summary["runs"]["failure"] == 0
    assert set(summary["tenants"]) == {"acme", "globex", "initech", "_unrouted"}
    for tenant in ("acme", "globex", "initech"):
        figures = summary["tenants"][tenant]
        assert figures["hub_matches_contract"] and figures["quarantine_matches"]
        assert figures["hub_active"] > 0 and figures["hub_deleted"] == 2
        assert figures["quarantined"] == 9
    # The demo's state is inspectable afterwards with the export commands.
    demo_env = {"LILY_HOME": summary["lily_home"]}
    exported = lily("quarantine", "export", "--tenant", "acme", env=demo_env)
    assert exported.returncode == 0
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert len(lines) == 9 and all(set(r) == {"event_id", "reason", "detail", "raw"} for r in lines)
    hub = lily("hub", "export", "--tenant", "acme", env=demo_env)
    records = [json.loads(line) for line in hub.stdout.splitlines()]
    assert len(records) == figures["hub_active"] + figures["hub_deleted"]
    assert all({"qualified_name", "status", "updated_at", "event_id"} <= set(r) for r in records)


@pytest.mark.parametrize("hub", ["local", "atlan"])
def test_run_until_idle_drains_kafka_and_propagation_with_the_real_daemon(
    lily_home: Path,
    tmp_path: Path,
    kafka_bootstrap: str,
    topic: str,
    hub: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if hub == "atlan":
        # The same pipeline writing to Atlan: the emulator over HTTP, through pyatlan.
        emulator: AtlanEmulator = request.getfixturevalue("atlan_emulator")
        monkeypatch.setenv("LILY_HUB", "atlan")
        monkeypatch.setenv("ATLAN_BASE_URL", emulator.base_url)
        monkeypatch.setenv("ATLAN_API_KEY", emulator.api_key)
        monkeypatch.setenv("LILY_ATLAN_BACKOFF_S", "0.05")
    traffic = generate_demo(
        tenants=("acme", "globex"), tables_per_tenant=2, columns_per_table=2, seed=3
    )
    produce(kafka_bootstrap, topic, traffic.messages)
    config = tmp_path / "lily.yaml"
    receiver = RecordingReceiver().start()
    request.addfinalizer(receiver.stop)
    config.write_text(
        f"targets:\n  - name: audit\n    type: webhook\n    url: {receiver.url}\n"
        "    secret_env: AUDIT_SECRET\n"
    )
    env = {"LILY_CONFIG": str(config), "AUDIT_SECRET": "s3cret-for-the-audit-target"}
    proc = lily("run", "--until-idle", "--timeout", "240", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    # Idle includes propagation: when it returns, the target has every record's latest
    # version (it did not wait for the propagation sensor before).
    delivered: dict[tuple[str, str], int] = {}
    for body in receiver.bodies():
        for change in body["changes"]:
            key = (body["tenant"], change["qualified_name"])
            delivered[key] = max(delivered.get(key, 0), change["version"])
    # Both tenants' events in one run per tick (a run over their range of tenant partitions).
    assert summary["runs"]["success"] >= 1 and summary["runs"]["failure"] == 0
    expected = traffic.expected_state()
    for tenant in ("acme", "globex"):
        exported = lily("hub", "export", "--tenant", tenant, env=env)
        got = {r["qualified_name"]: r for r in map(json.loads, exported.stdout.splitlines())}
        assert {qn for (t, qn) in delivered if t == tenant} == set(got)
        assert summary["tenants"][tenant]["targets_behind"] == {}
        assert {
            k: {f: v for f, v in r.items() if f != "updated_at"} for k, r in got.items()
        } == expected[tenant]
        assert summary["tenants"][tenant]["pending_batches"] == 0
    if hub == "atlan":
        # Atlan holds every record of the hub with its status, deleted ones included (a
        # record deleted before Atlan saw it is created there, then archived).
        atlan = {e["attributes"]["qualifiedName"]: e["status"] for e in emulator.entities()}
        wanted = {qn: r["status"] for t in ("acme", "globex") for qn, r in expected[t].items()}
        assert atlan == wanted


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["hub", "export", "--tenant", "../etc"], {}, "invalid tenant"),
        (["quarantine", "export", "--tenant", "ACME"], {}, "invalid tenant"),
        (["hub", "export", "--tenant", "acme"], {"LILY_HUB": "mongo"}, "LILY_HUB='mongo'"),
        (["hub", "export", "--tenant", "acme"], {"LILY_HUB": "atlan"}, "ATLAN_BASE_URL"),
        (
            ["hub", "export", "--tenant", "acme"],
            {"LILY_CONFIG": "/nonexistent/lily.yaml"},
            "no such file",
        ),
        (["hub", "export", "--tenant", "acme"], {"LILY_MAX_EVENT_BYTES": "lots"}, "not an integer"),
        (
            ["hub", "export", "--tenant", "acme"],
            {"LILY_KAFKA_TOPICS": "bad topic!"},
            "invalid topic",
        ),
    ],
)
def test_bad_arguments_and_configuration_give_one_line_errors(
    lily_home: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    proc = lily(*args, env=env, timeout=60)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("lily: error:")


def test_bad_config_file_is_one_line_error(lily_home: Path, tmp_path: Path) -> None:
    config = tmp_path / "lily.yaml"
    config.write_text("tenants:\n  - name: Not_A_Tenant\n")
    proc = lily("hub", "export", "--tenant", "acme", env={"LILY_CONFIG": str(config)}, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "tenants.0.name" in proc.stderr


def test_run_until_idle_with_kafka_down_fails_clearly(lily_home: Path) -> None:
    proc = lily(
        "run",
        "--until-idle",
        "--timeout",
        "12",
        env={"LILY_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"},
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Kafka unreachable" in proc.stderr and proc.stderr.count("\n") == 1
