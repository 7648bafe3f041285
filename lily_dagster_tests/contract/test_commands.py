"""CONTRACT.md §2 and §3: the `lily` commands and their configuration by environment, as a
user's shell scripts see them (exit codes, stdout, stderr)."""

from __future__ import annotations

import json
import socket
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from lily_dagster_tests.contract import outside
from lily_dagster_tests.contract.conftest import QUARANTINES, Scenario
from lily_dagster_tests.contract.workload import TENANTS

HUB_FIELDS = {
    "qualified_name",
    "type_name",
    "name",
    "status",
    "attributes",
    "classifications",
    "event_time",
    "event_id",
    "updated_at",
}
QUARANTINE_FIELDS = {"event_id", "reason", "detail", "raw"}


def test_run_until_idle_exits_0_with_a_json_summary_of_what_it_did(scenario: Scenario) -> None:
    for run in (scenario.run1, scenario.run2):
        assert run.returncode == 0, run.stderr[-3000:]
        summary = run.summary()  # the whole of stdout is one JSON object
        assert summary["runs"]["failure"] == 0
    summary = scenario.run1.summary()
    assert summary["runs"]["success"] >= 1
    for tenant in TENANTS:
        figures = summary["tenants"][tenant]
        statuses = Counter(r["status"] for r in scenario.hub_records(tenant))
        assert (figures["hub_active"], figures["hub_deleted"]) == (
            statuses["ACTIVE"],
            statuses["DELETED"],
        ), tenant
        assert figures["pending_batches"] == 0
    for tenant in QUARANTINES:
        reasons = Counter(e["reason"] for e in scenario.quarantined(tenant))
        assert summary["tenants"][tenant]["quarantined_by_reason"] == dict(reasons), tenant


def test_hub_export_prints_the_documented_record_fields(scenario: Scenario) -> None:
    for tenant in TENANTS:
        records = scenario.hub_records(tenant)
        assert records
        for record in records:
            wanted = HUB_FIELDS | (
                {"inputs", "outputs"} if record["type_name"] == "Process" else set()
            )
            assert set(record) == wanted, record["qualified_name"]
            assert record["status"] in {"ACTIVE", "DELETED"}
            assert isinstance(record["attributes"], dict)
            assert isinstance(record["classifications"], list)
            outside.rfc3339(record["event_time"])
            outside.rfc3339(record["updated_at"])


def test_quarantine_export_prints_the_documented_entry_fields(scenario: Scenario) -> None:
    for tenant in QUARANTINES:
        entries = scenario.quarantined(tenant)
        assert entries, tenant
        for entry in entries:
            # raw_base64 only beside a raw that is not text (issue 12).
            assert QUARANTINE_FIELDS <= set(entry) <= QUARANTINE_FIELDS | {"raw_base64"}, entry
            assert isinstance(entry["reason"], str) and entry["reason"]
            assert isinstance(entry["raw"], str) or "raw_base64" in entry


def test_state_lives_under_lily_home(scenario: Scenario, tmp_path: Path) -> None:
    assert scenario.home.is_dir() and any(scenario.home.iterdir())
    other = tmp_path / "other-home"
    elsewhere = {**scenario.env, "LILY_HOME": str(other)}
    for tenant in TENANTS:
        for command in ("hub", "quarantine"):
            # Refused, naming where it looked: not answered as an empty hub would be.
            proc = outside.lily(command, "export", "--tenant", tenant, env=elsewhere)
            assert proc.stdout == ""
            _one_line_error(proc, f"LILY_HOME={other}")


@pytest.fixture
def home_env(tmp_path: Path) -> dict[str, str]:
    return outside.clean_environment(LILY_HOME=str(tmp_path / "home"))


def _one_line_error(proc: subprocess.CompletedProcess[str], *mentions: str) -> None:
    assert proc.returncode != 0, proc.stdout[-500:]
    assert proc.stderr.startswith("lily: error:"), proc.stderr[-1500:]
    assert proc.stderr.count("\n") == 1 and proc.stderr.endswith("\n"), proc.stderr[-1500:]
    for mention in mentions:
        assert mention in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("args", "mention"),
    [
        pytest.param(["hub", "export"], "--tenant", id="missing-tenant"),
        pytest.param(["hub", "export", "--tenant", "../etc"], "../etc", id="path-as-tenant"),
        pytest.param(["quarantine", "export", "--tenant", "ACME"], "ACME", id="upper-case-tenant"),
        pytest.param(["run", "--until-idle", "--timeout", "soon"], "--timeout", id="timeout"),
        pytest.param(["token", "--tenant", "acme", "--ttl", "forever"], "--ttl", id="ttl"),
        pytest.param(["broker", "--port", "not-a-port"], "--port", id="broker-port"),
        pytest.param(["webhook", "serve", "--port", "eighty"], "--port", id="webhook-port"),
        # past the socket layer's range: a traceback, and a receiver that never listened
        pytest.param(["webhook", "serve", "--port", "99999"], "1-65535", id="webhook-port-range"),
        pytest.param(["serve", "--port", "0"], "1-65535", id="serve-port-zero"),
        pytest.param(["broker", "--port", "70000"], "1-65535", id="broker-port-range"),
        pytest.param(["frobnicate"], "frobnicate", id="unknown-command"),
    ],
)
def test_bad_arguments_exit_non_zero_with_one_line(
    home_env: dict[str, str], args: list[str], mention: str
) -> None:
    _one_line_error(outside.lily(*args, env=home_env, timeout=60), mention)


@pytest.mark.parametrize("command", [["serve"], ["webhook", "serve"], ["broker"]])
def test_a_port_in_use_fails_in_one_line_and_nothing_claims_to_listen(
    home_env: dict[str, str], command: list[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = outside.lily(*command, "--port", str(port), env=home_env, timeout=60)
    _one_line_error(proc, str(port))
    assert "in use" in proc.stderr, proc.stderr


CONFIG_FILES = {
    "invalid-yaml": "tenants: [\n",
    "unknown-key": "tenantz:\n  - name: acme\n",
    "bad-tenant-name": "tenants:\n  - name: Not_A_Tenant\n",
}
EXPORT = ["hub", "export", "--tenant", "acme"]


@pytest.mark.parametrize(
    ("variables", "config", "args", "mention"),
    [
        pytest.param({"LILY_HUB": "mongo"}, None, EXPORT, "LILY_HUB", id="hub"),
        pytest.param({"LILY_HUB": "atlan"}, None, EXPORT, "ATLAN_BASE_URL", id="atlan-no-url"),
        pytest.param(
            {"LILY_HUB": "atlan", "ATLAN_BASE_URL": "http://127.0.0.1:9"},
            None,
            EXPORT,
            "ATLAN_API_KEY",
            id="atlan-no-key",
        ),
        pytest.param(
            {"LILY_CONFIG": "/nonexistent/lily.yaml"},
            None,
            EXPORT,
            "/nonexistent/lily.yaml",
            id="config-missing",
        ),
        pytest.param({}, "invalid-yaml", EXPORT, "LILY_CONFIG", id="config-invalid-yaml"),
        pytest.param({}, "unknown-key", EXPORT, "tenantz", id="config-unknown-key"),
        pytest.param({}, "bad-tenant-name", EXPORT, "tenants.0.name", id="config-bad-tenant"),
        pytest.param(
            {"LILY_MAX_EVENT_BYTES": "lots"},
            None,
            EXPORT,
            "LILY_MAX_EVENT_BYTES",
            id="max-event-bytes",
        ),
        pytest.param(
            {"LILY_KAFKA_TOPICS": "bad topic!"}, None, EXPORT, "LILY_KAFKA_TOPICS", id="topics"
        ),
        pytest.param(
            {"LILY_JWT_HS256_SECRET": "short"},
            None,
            ["token", "--tenant", "acme"],
            "LILY_JWT_HS256_SECRET",
            id="token-short-secret",
        ),
        pytest.param(
            {"LILY_JWT_HS256_SECRET": "short"},
            None,
            ["webhook", "serve", "--port", "PORT"],
            "LILY_JWT_HS256_SECRET",
            id="webhook-short-secret",
        ),
    ],
)
def test_bad_configuration_exits_non_zero_with_one_line(
    home_env: dict[str, str],
    tmp_path: Path,
    variables: dict[str, str],
    config: str | None,
    args: list[str],
    mention: str,
) -> None:
    env = {**home_env, **variables}
    if config is not None:
        path = tmp_path / "lily.yaml"
        path.write_text(CONFIG_FILES[config])
        env["LILY_CONFIG"] = str(path)
    args = [str(outside.free_port()) if a == "PORT" else a for a in args]
    _one_line_error(outside.lily(*args, env=env, timeout=30), mention)


def test_run_until_idle_refuses_a_target_whose_secret_is_not_set(
    local: Scenario, tmp_path: Path
) -> None:
    """A bad target configuration is bad configuration: `lily run --until-idle` says so at
    once, naming the target, instead of waiting for a daemon that cannot load the code."""
    config = tmp_path / "lily.yaml"
    config.write_text(
        json.dumps(
            {
                "targets": [
                    {
                        "name": "forgotten-secret",
                        "type": "webhook",
                        "url": "http://127.0.0.1:9/hook",
                        "secret_env": "CONTRACT_UNSET_SECRET",
                    }
                ]
            }
        )
    )
    topic = f"contract.empty.{tmp_path.name}"
    outside.create_topics(local.env["LILY_KAFKA_BOOTSTRAP"], [topic])
    env = outside.clean_environment(
        LILY_HOME=str(tmp_path / "home"),
        LILY_CONFIG=str(config),
        LILY_KAFKA_BOOTSTRAP=local.env["LILY_KAFKA_BOOTSTRAP"],
        LILY_KAFKA_TOPICS=topic,
    )
    run = outside.run_until_idle(env, timeout_s=45)
    _one_line_error(
        subprocess.CompletedProcess([], run.returncode, run.stdout, run.stderr),
        "forgotten-secret",
    )
