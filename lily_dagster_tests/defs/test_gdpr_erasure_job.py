"""gdpr_erasure_job as launched from the Dagster UI, on a real (SQLite) instance: the stores
forget the subject and the loopback target gets the changed records; a subject typed in
plaintext is sealed in the run's stored config, so no file of Dagster's storage holds it
afterwards; a sealed subject works as well; a dry run delivers nothing; a bad tenant fails
in one line with the subject redacted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, Definitions, ExecuteInProcessResult, instance_for_test

from lily_dagster.defs.gdpr.jobs import gdpr_erasure_job
from lily_dagster.defs.resources import LilyResource, PolarsParquetIOManager
from lily_dagster.lib.audit import AuditLog
from lily_dagster.lib.crypto import VALUE_PREFIX, cipher_for
from lily_dagster_tests.support.gdpr_home import (
    FOLDED,
    SUBJECT,
    TABLE,
    Home,
    holdings,
    naming,
    subject_everywhere,
)

JOB = Definitions(
    jobs=[gdpr_erasure_job],
    resources={"lily": LilyResource(), "io_manager": PolarsParquetIOManager()},
).resolve_job_def("gdpr_erasure_job")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Home]:
    with subject_everywhere(tmp_path, monkeypatch) as populated:
        yield populated


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as test_instance:
        yield test_instance


def launch(instance: DagsterInstance, **config: Any) -> ExecuteInProcessResult:
    """What the launchpad starts: the job's flat config block."""
    return JOB.execute_in_process(run_config=config, instance=instance, raise_on_error=False)


def steps(result: ExecuteInProcessResult, kind: str) -> list[str]:
    return [e.step_key or "" for e in result.all_events if e.event_type_value == kind]


def files_naming_the_subject(root: Path) -> list[str]:
    return [
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and FOLDED.encode() in p.read_bytes().lower()
    ]


def test_a_ui_launch_erases_delivers_and_leaves_no_plaintext_subject_in_dagster(
    home: Home, instance: DagsterInstance
) -> None:
    before = len(home.audit.requests)
    result = launch(instance, tenant="acme", subject=SUBJECT)
    assert result.success
    assert steps(result, "STEP_SUCCESS") == ["erase_data_subject", "deliver_erasure"]
    assert naming(home.settings, "acme") == set()
    assert naming(home.settings, "globex") == set(holdings(home.settings, "globex"))
    changes = [c for r in home.audit.requests[before:] for c in r.json()["changes"]]
    assert sorted((c["qualified_name"], c["change"]) for c in changes) == [
        (f"{TABLE}/EMAIL", "updated"),
        (f"{TABLE}/NAME", "updated"),
    ]
    stored = instance.get_run_by_id(result.run_id)
    assert stored is not None and str(stored.run_config["subject"]).startswith(VALUE_PREFIX)
    assert files_naming_the_subject(Path(instance.root_directory)) == []
    entry = AuditLog(home.settings.audit_dir).read("acme")[-1]
    assert entry["action"] == "gdpr.erase" and entry["status"] == "succeeded"
    assert entry["resource"].endswith(f"@run:{result.run_id}")
    assert FOLDED not in str(entry).lower()


def test_a_sealed_subject_works_and_a_second_run_finds_nothing(
    home: Home, instance: DagsterInstance
) -> None:
    sealed = cipher_for(home.settings, "acme").seal_text(SUBJECT)
    first = launch(instance, tenant="acme", subject=sealed)
    assert first.success and naming(home.settings, "acme") == set()
    stored = instance.get_run_by_id(first.run_id)
    assert stored is not None and stored.run_config["subject"] == sealed
    second = launch(instance, tenant="acme", subject=SUBJECT.upper())
    assert second.success
    assert steps(second, "STEP_SKIPPED") == ["deliver_erasure"]  # nothing changed


def test_a_dry_run_changes_and_delivers_nothing(home: Home, instance: DagsterInstance) -> None:
    before = len(home.audit.requests)
    result = launch(instance, tenant="acme", subject=SUBJECT, dry_run=True)
    assert result.success and steps(result, "STEP_SKIPPED") == ["deliver_erasure"]
    assert naming(home.settings, "acme") == set(holdings(home.settings, "acme"))
    assert len(home.audit.requests) == before


def test_a_bad_tenant_fails_in_one_line_with_the_subject_redacted(
    home: Home, instance: DagsterInstance
) -> None:
    result = launch(instance, tenant="Not A Tenant", subject=SUBJECT)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error = failure.step_failure_data.error
    assert error is not None and "invalid tenant 'Not A Tenant'" in error.message
    stored = instance.get_run_by_id(result.run_id)
    assert stored is not None and stored.run_config["subject"] == "[redacted]"
    assert files_naming_the_subject(Path(instance.root_directory)) == []
