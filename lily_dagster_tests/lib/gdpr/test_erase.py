"""`erase_subject` over a tenant's real stores (encrypted, as in production): the hub and its
change log, staging, the SQLite inbox, the quarantine, a target's dead letters and the IO
manager's intermediates forget the subject; the records it rewrote reach a loopback target
as `updated` changes; a second erasure, a dry run and an unknown subject change nothing;
the audit log and the request files never name the subject; an interrupted erasure is
visible and completed by running it again; other tenants are untouched."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lily_dagster.lib.audit import AuditLog
from lily_dagster.lib.gdpr.erase import deliver_changes, erase_subject, unfinished_requests
from lily_dagster.lib.gdpr.erased import GDPR_DIR
from lily_dagster.lib.gdpr.requests import ErasureRequests
from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster.settings import ConfigError
from lily_dagster_tests.support.gdpr_home import (
    FOLDED,
    SUBJECT,
    TABLE,
    Home,
    holdings,
    naming,
    subject_everywhere,
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Home]:
    with subject_everywhere(tmp_path, monkeypatch) as populated:
        yield populated


def test_every_store_forgets_the_subject_and_the_target_gets_the_records(home: Home) -> None:
    settings = home.settings
    assert naming(settings, "acme") == set(holdings(settings, "acme"))  # all of them
    delivered_before = len(home.audit.requests)

    summary = erase_subject(settings, "acme", SUBJECT)
    assert summary.as_dict()["records_changed"] == 2
    assert sorted(summary.records) == [f"{TABLE}/EMAIL", f"{TABLE}/NAME"]
    stores = summary.stores
    assert stores["hub"] == 2 and stores["change_log"] >= 2
    assert stores["staging"] == 1 and stores["inbox"] == 2 and stores["quarantine"] == 1
    assert stores["dead_letters"] >= 2 and stores["intermediates"] == 1
    assert naming(settings, "acme") == set()
    assert naming(settings, "globex") == set(holdings(settings, "globex"))

    results = deliver_changes(settings, "acme")
    assert results["audit"].delivered == 2 and results["audit"].error is None
    bodies = [r.json() for r in home.audit.requests[delivered_before:]]
    changes = [c for body in bodies for c in body["changes"]]
    assert {c["qualified_name"]: c["change"] for c in changes} == {
        f"{TABLE}/EMAIL": "updated",
        f"{TABLE}/NAME": "updated",
    }
    email = next(c for c in changes if c["qualified_name"].endswith("EMAIL"))
    assert email["attributes"]["description"] == "Ask [erased] first"
    assert email["attributes"]["owner_users"] == ["ops"]
    assert FOLDED not in json.dumps(bodies).lower()


def test_a_second_erasure_a_dry_run_and_an_unknown_subject_change_nothing(home: Home) -> None:
    settings = home.settings
    dry = erase_subject(settings, "acme", SUBJECT, dry_run=True)
    assert dry.as_dict()["dry_run"] is True and dry.as_dict()["records_changed"] == 2
    assert naming(settings, "acme") == set(holdings(settings, "acme"))  # nothing changed
    assert erase_subject(settings, "acme", SUBJECT).stores["hub"] == 2
    again = erase_subject(settings, "acme", SUBJECT.upper())
    assert again.as_dict()["records_changed"] == 0 and set(again.stores.values()) == {0}
    nobody = erase_subject(settings, "acme", "nobody@nowhere.example")
    assert nobody.as_dict()["records_changed"] == 0 and set(nobody.stores.values()) == {0}


def test_the_audit_log_and_the_request_files_record_the_request_not_the_subject(
    home: Home,
) -> None:
    settings = home.settings
    summary = erase_subject(settings, "acme", SUBJECT, sub="cli:privacy-officer")
    erase_subject(settings, "acme", SUBJECT, dry_run=True)
    entries = [e for e in AuditLog(settings.audit_dir).read("acme") if e["action"] == "gdpr.erase"]
    assert [e["status"] for e in entries] == ["succeeded", "succeeded"]
    assert entries[0]["resource"].startswith(f"gdpr/erase/{summary.request_id}@subject:")
    assert entries[0]["sub"] == "cli:privacy-officer"
    assert "erase-dry-run" in entries[1]["resource"]
    assert summary.subject_hash[:16] in entries[0]["resource"]
    gdpr = settings.home / GDPR_DIR
    for path in [settings.audit_dir / "acme.jsonl", *gdpr.rglob("*")]:
        if path.is_file():
            assert b"jane" not in path.read_bytes().lower(), path
    (request,) = ErasureRequests(gdpr).all("acme")
    assert request.status == "done" and request.subject_hash == summary.subject_hash


def test_an_interrupted_erasure_is_visible_and_completed_by_running_it_again(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = home.settings

    def crash(*args: Any, **kwargs: Any) -> int:
        raise OSError("disk gone")

    with monkeypatch.context() as patch:
        patch.setattr(QuarantineStore, "erase_subject", crash)
        with pytest.raises(OSError):
            erase_subject(settings, "acme", SUBJECT)
    (left,) = unfinished_requests(settings, "acme")
    assert naming(settings, "acme") == {"quarantine", "dead_letters", "intermediates"}
    failed = AuditLog(settings.audit_dir).read("acme")[-1]
    assert failed["action"] == "gdpr.erase" and failed["status"] == "failed"

    resumed = erase_subject(settings, "acme", SUBJECT)
    assert resumed.request_id == left and resumed.resumed
    assert resumed.stores["hub"] == 0 and resumed.stores["quarantine"] == 1
    assert naming(settings, "acme") == set() and unfinished_requests(settings, "acme") == []
    (request,) = ErasureRequests(settings.home / GDPR_DIR).all("acme")
    assert [run["stores"].get("quarantine") for run in request.runs] == [None, 1]


def test_bad_requests_fail_in_one_line(home: Home) -> None:
    with pytest.raises(ConfigError, match="invalid tenant"):
        erase_subject(home.settings, "Not A Tenant", SUBJECT)
    with pytest.raises(ConfigError, match="user id or an e-mail"):
        erase_subject(home.settings, "acme", "  ")
    with pytest.raises(ConfigError, match="LILY_HUB=atlan"):
        erase_subject(home.settings, "acme", SUBJECT, purge=True)
