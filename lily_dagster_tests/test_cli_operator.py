"""The operator's commands in-process (fast): the LILY_HOME they read is named when it holds
nothing, unknown tenants and reason codes are refused in one line, `lily batches` lists,
releases and discards pending batches (refusing one a run in flight holds), and a failed
run is described in one line."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, Failure, RetryRequested, job, op
from dagster._core.storage.tags import ROOT_RUN_ID_TAG

from lily_dagster.cli import main
from lily_dagster.cli.quarantine import describe_failed_run
from lily_dagster.defs.ingest.recovery import run_in_flight
from lily_dagster.lib.reasons import Reason
from lily_dagster.lib.staging import LANDED_SCHEMA, StagingArea
from lily_dagster.runtime import (
    _not_the_copied_yaml_warning,
    instance_yaml,
    prepare_dagster_home,
)
from lily_dagster.settings import ConfigError, Settings

STATE_COMMANDS = [
    ["hub", "export", "--tenant", "acme"],
    ["quarantine", "export", "--tenant", "acme"],
    ["quarantine", "replay", "--tenant", "acme"],
    ["dlq", "list", "--tenant", "acme", "--target", "audit"],
    ["dlq", "replay", "--tenant", "acme", "--target", "audit"],
    ["batches", "list", "--tenant", "acme"],
    ["batches", "release", "--tenant", "acme", "--batch", "b1"],
    ["batches", "discard", "--tenant", "acme", "--batch", "b1"],
]


def run_lily(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    (line,) = err.splitlines()
    assert line.startswith("lily: error: "), line
    return line


@pytest.mark.parametrize("args", STATE_COMMANDS, ids=lambda a: "-".join(a[:2]))
def test_a_home_without_lily_state_is_named(
    args: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("LILY_HOME", raising=False)
    monkeypatch.delenv("LILY_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # another folder: the default ./.lily holds nothing
    code, out, err = run_lily(args, capsys)
    assert code != 0 and out == ""
    line = one_error_line(err)
    assert f"LILY_HOME={tmp_path / '.lily'}" in line and "no Lily state" in line
    assert not (tmp_path / ".lily").exists()  # and it made none


def land(home: Path, tenant: str, batch_id: str, payloads: list[bytes]) -> StagingArea:
    staging = StagingArea(home / "staging")
    frame = pl.DataFrame(
        {
            "origin": [f"webhook:{batch_id}/{i}" for i in range(len(payloads))],
            "value": payloads,
            "received_at": [None] * len(payloads),
        },
        schema=LANDED_SCHEMA,
    )
    staging.land(tenant, batch_id, "webhook", frame, {})
    return staging


@pytest.mark.parametrize("args", STATE_COMMANDS, ids=lambda a: "-".join(a[:2]))
def test_an_unknown_tenant_is_refused(
    args: list[str], lily_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    land(lily_home, "globex", "b0", [b"{}"])
    code, out, err = run_lily([*args[:3], "initech", *args[4:]], capsys)
    assert code != 0 and out == ""
    line = one_error_line(err)
    assert "unknown tenant 'initech'" in line and f"LILY_HOME={lily_home}" in line
    assert "known: globex" in line


def test_a_known_tenant_with_nothing_exports_nothing(
    lily_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    land(lily_home, "globex", "b0", [b"{}"])  # landed, nothing applied or quarantined yet
    for args in (["hub", "export"], ["quarantine", "export"], ["batches", "list"]):
        code, out, _ = run_lily([*args, "--tenant", "globex"], capsys)
        assert code == 0 and (out == "" or args[0] == "batches"), args
    config = tmp_path / "lily.yaml"
    config.write_text("tenants:\n  - name: initech\n")  # configured, no event yet
    monkeypatch.setenv("LILY_CONFIG", str(config))
    assert run_lily(["quarantine", "export", "--tenant", "initech"], capsys) == (0, "", "")
    # Messages that named no valid tenant have no tenant to know them by.
    assert run_lily(["quarantine", "export", "--tenant", "_unrouted"], capsys) == (0, "", "")


def test_an_unknown_reason_is_refused_with_the_known_codes(
    lily_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["quarantine", "replay", "--tenant", "acme", "--reason", "oversize"])
    assert exit_.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert "unknown reason code 'oversize'" in line
    assert all(reason.value in line for reason in Reason)


def claim_run(instance: DagsterInstance, run_id: str, status: DagsterRunStatus) -> None:
    instance.add_run(DagsterRun(job_name="tenant_ingest_job", run_id=run_id, status=status))


def test_batches_list_release_and_discard(
    lily_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = json.dumps({"event_id": "e1", "tenant": "acme"}).encode()
    staging = land(lily_home, "acme", "b-running", [event])
    land(lily_home, "acme", "b-failed", [event, b"not json"])
    staging.claim("acme", ["b-running"], "run-running")
    staging.claim("acme", ["b-failed"], "run-failed")
    settings = Settings.from_env()
    prepare_dagster_home(settings)
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        claim_run(instance, "run-running", DagsterRunStatus.STARTED)
        claim_run(instance, "run-failed", DagsterRunStatus.FAILURE)

    code, out, _ = run_lily(["batches", "list", "--tenant", "acme"], capsys)
    listed = {b["batch_id"]: b for b in map(json.loads, out.splitlines())}
    assert code == 0 and list(listed) == ["b-failed", "b-running"]
    assert listed["b-failed"]["state"] == "claimed" and listed["b-failed"]["events"] == 2
    assert listed["b-failed"]["run_status"] == "FAILURE"
    assert listed["b-running"]["run_status"] == "STARTED"

    for action in ("release", "discard"):
        code, out, err = run_lily(
            ["batches", action, "--tenant", "acme", "--batch", "b-running"], capsys
        )
        assert code == 2 and out == ""
        assert "held by run run-running, which has not ended" in one_error_line(err)

    code, out, _ = run_lily(
        ["batches", "release", "--tenant", "acme", "--batch", "b-failed"], capsys
    )
    assert code == 0 and json.loads(out)["released"] is True
    assert staging.unclaimed("acme") == ["b-failed"]
    code, out, _ = run_lily(
        ["batches", "discard", "--tenant", "acme", "--batch", "b-failed"], capsys
    )
    assert code == 0 and json.loads(out)["quarantined"] == 2
    code, out, _ = run_lily(["quarantine", "export", "--tenant", "acme"], capsys)
    assert [json.loads(line)["reason"] for line in out.splitlines()] == [
        "discarded_by_operator"
    ] * 2
    code, _, err = run_lily(
        ["batches", "discard", "--tenant", "acme", "--batch", "b-failed"], capsys
    )
    assert code == 2 and "discarded already" in one_error_line(err)


def test_a_re_execution_in_flight_holds_its_root_run_s_batches(lily_home: Path) -> None:
    settings = Settings.from_env()
    prepare_dagster_home(settings)
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        claim_run(instance, "root", DagsterRunStatus.FAILURE)
        assert not run_in_flight(instance, "root")
        instance.add_run(
            DagsterRun(
                job_name="tenant_ingest_job",
                run_id="again",
                status=DagsterRunStatus.STARTING,
                tags={ROOT_RUN_ID_TAG: "root"},
            )
        )
        assert run_in_flight(instance, "root")
        assert not run_in_flight(instance, "unknown")


@op
def hub_step() -> None:
    try:
        raise ConnectionError("Atlan at http://atlan unreachable; the records stay pending")
    except ConnectionError as exc:
        raise RetryRequested(max_retries=0) from exc


@op
def other_step() -> None:
    raise Failure("a hook broke")


@job
def two_failures() -> None:
    hub_step()
    other_step()


def test_a_failed_run_is_described_in_one_line() -> None:
    result = two_failures.execute_in_process(raise_on_error=False)
    line = describe_failed_run(result)
    assert "\n" not in line
    assert line.startswith(f"run {result.run_id} failed: ")
    assert "step hub_step failed: ConnectionError: Atlan at http://atlan unreachable" in line
    assert "step other_step failed: " in line and "a hook broke" in line


def test_lily_log_level_fills_in_the_instance_s_python_log_level(
    lily_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "python_log_level: INFO" in instance_yaml(Settings.from_env())
    monkeypatch.setenv("LILY_LOG_LEVEL", "debug")
    settings = Settings.from_env()
    home = prepare_dagster_home(settings)
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.python_log_level == "DEBUG"
        retention: Any = instance.get_settings("retention")
        assert retention["sensor"]["purge_after_days"]["skipped"] == 1
    monkeypatch.setenv("LILY_LOG_LEVEL", "chatty")
    with pytest.raises(ConfigError, match="LILY_LOG_LEVEL='chatty': expected one of DEBUG"):
        Settings.from_env()


def test_retention_days_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env().run_retention_days == 7
    monkeypatch.setenv("LILY_RUN_RETENTION_DAYS", "0")
    assert Settings.from_env().run_retention_days == 0
    monkeypatch.setenv("LILY_RUN_RETENTION_DAYS", "-1")
    with pytest.raises(ConfigError, match="LILY_RUN_RETENTION_DAYS=-1 must be at least 0"):
        Settings.from_env()


def test_dagster_s_beta_and_superseded_warnings_are_silenced_and_no_other() -> None:
    # In a process of its own: pytest installs warning filters of its own around each test.
    code = """
import warnings, lily_dagster
from dagster_shared.utils.warnings import BetaWarning, PreviewWarning, SupersessionWarning
for category in (BetaWarning, PreviewWarning, SupersessionWarning, UserWarning):
    warnings.warn(category.__name__, category, stacklevel=1)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "UserWarning" in proc.stderr
    assert "Beta" not in proc.stderr and "Preview" not in proc.stderr
    assert "Supersession" not in proc.stderr


def test_dagster_dev_s_note_about_the_copied_dagster_yaml_is_dropped() -> None:
    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("dagster", logging.WARNING, __file__, 1, message, None, None)

    copied = (
        "Found a dagster instance configuration value (dagster.yaml) in the current folder, "
        "... The dagster.yaml file will not be used to configure Dagster unless ..."
    )
    assert not _not_the_copied_yaml_warning(record(copied))
    assert _not_the_copied_yaml_warning(record("Launching Dagster services..."))
