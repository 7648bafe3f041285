"""CONTRACT.md §7, `lily gdpr erase`, from outside: only the `lily` commands, the
environment, HTTP and a loopback webhook target.

A data subject (an e-mail address, in several spellings) is in descriptions, owners and
sample values of records loaded with `lily backfill` and posted to the webhook receiver;
a backfill line that fails validation puts it in the quarantine, and a target that answers
400 puts it in its dead-letter queue. Then, in order: a dry run, the erasure, the same
erasure again, an erasure of a subject found nowhere, and an event naming the subject that
arrives after the erasure. The tests read what each step printed and what the exports, the
access API, the target and the audit log show."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from lily_dagster_tests.contract import outside
from lily_dagster_tests.contract.outside import WebhookTarget

JWT_SECRET = "gdpr-contract-hs256-secret-0123456789abcdef"
TARGET_SECRET = "gdpr-contract-target-secret"
TOPIC = "gdpr.contract.events"
TENANT = "acme"
SUBJECT = "Jane.Doe@Acme.example"
FOLDED = SUBJECT.casefold()
CONNECTION = "default/snowflake/1700000000/DB/SCH"
ACCEPT_PATH, REFUSE_PATH = "/hooks/accept", "/hooks/refuse"
T0 = datetime.now(UTC) - timedelta(hours=2)


def envelope(name: str, minutes: int, **attributes: Any) -> dict[str, Any]:
    return {
        "event_id": f"{name}-{minutes}",
        "tenant": TENANT,
        "source": "snowflake",
        "op": "upsert",
        "event_time": (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z"),
        "asset": {
            "type_name": "Table",
            "qualified_name": f"{CONNECTION}/{name}",
            "name": name,
            "attributes": attributes,
        },
    }


def backfilled() -> list[dict[str, Any]]:
    """Three records naming the subject (description, owner, sample values), one not."""
    return [
        envelope("CUSTOMERS", 1, description=f"Ask {SUBJECT} about it", owner_users=["ops"]),
        envelope("ORDERS", 1, description="orders", owner_users=[FOLDED, "ops"]),
        envelope("CONTACTS", 1, sample_values=[SUBJECT.upper(), "someone@else.example"]),
        envelope("PRODUCTS", 1, description="nobody's business", owner_users=["ops"]),
    ]


def posted() -> list[dict[str, Any]]:
    return [
        envelope("LEADS", 2, description=f"from {FOLDED}.", owner_groups=["sales"]),
        envelope("REGIONS", 2, description="regions", owner_users=["ops"]),
    ]


@dataclass
class Step:
    """One `lily` command: its exit code and output."""

    returncode: int
    stdout: str
    stderr: str

    @classmethod
    def of(cls, proc: subprocess.CompletedProcess[str]) -> Step:
        return cls(proc.returncode, proc.stdout, proc.stderr)

    def summary(self) -> dict[str, Any]:
        assert self.returncode == 0, self.stderr[-2000:]
        (line,) = self.stdout.strip().splitlines()
        value = outside.strict_json(line)
        assert isinstance(value, dict)
        return value


@dataclass
class Views:
    """What a user sees of the tenant at one moment, as text."""

    hub: str
    quarantine: str
    dead_letters: str
    api_assets: str = ""
    api_changes: str = ""

    def naming(self) -> dict[str, bool]:
        return {k: FOLDED in str(v).lower() for k, v in self.__dict__.items() if v}


@dataclass
class Stack:
    env: dict[str, str]
    target: WebhookTarget
    api: str
    before: Views
    after_dry_run: Views
    dry_run: Step
    erase: Step
    after: Views
    delivered_after_erase: list[dict[str, Any]]  # changes the accepting target got then
    again: Step
    unknown: Step
    late: list[dict[str, Any]] = field(default_factory=list)  # hub export after a late event


def _config(target: WebhookTarget) -> dict[str, Any]:
    common = {"type": "webhook", "secret_env": "GDPR_TARGET_SECRET", "backoff_s": 0.05}
    return {
        "tenants": [{"name": TENANT}],
        "targets": [
            {"name": "accepting", "url": target.url(ACCEPT_PATH), **common},
            {"name": "refusing", "url": target.url(REFUSE_PATH), **common},
        ],
    }


def _views(env: dict[str, str], api: str) -> Views:
    token = outside.token(env, TENANT, "lily:read lily:read:pii")
    headers = {"Authorization": f"Bearer {token}"}
    assets = httpx.get(f"{api}/v1/tenants/{TENANT}/assets?limit=1000", headers=headers, timeout=30)
    changes = httpx.get(f"{api}/v1/tenants/{TENANT}/changes?since=0&limit=1000", headers=headers)
    assert assets.status_code == 200 and changes.status_code == 200
    return Views(
        hub=outside.lily_ok("hub", "export", "--tenant", TENANT, env=env),
        quarantine=outside.lily_ok("quarantine", "export", "--tenant", TENANT, env=env),
        dead_letters=outside.lily_ok(
            "dlq", "list", "--tenant", TENANT, "--target", "refusing", env=env
        ),
        api_assets=assets.text,
        api_changes=changes.text,
    )


def _gdpr(env: dict[str, str], *args: str) -> Step:
    return Step.of(outside.lily("gdpr", "erase", "--tenant", TENANT, *args, env=env, timeout=300))


def _accepted_changes(target: WebhookTarget, since: int) -> list[dict[str, Any]]:
    deliveries = target.received(ACCEPT_PATH)[since:]
    return [c for d in deliveries if 200 <= d.status < 300 for c in d.json()["changes"]]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("gdpr")
    with outside.small_stack(
        root,
        TOPIC,
        _config,
        REFUSE_PATH,
        LILY_JWT_HS256_SECRET=JWT_SECRET,
        GDPR_TARGET_SECRET=TARGET_SECRET,
    ) as small:
        env, target, api = small.env, small.target, small.api
        source = root / "backfill.jsonl"
        bad = {**backfilled()[0], "event_id": "bad-1", "op": "explode"}  # quarantined
        source.write_text("".join(json.dumps(e) + "\n" for e in [*backfilled(), bad]))
        outside.lily_ok("backfill", "--tenant", TENANT, "--source", str(source), env=env)
        outside.post_events(api, env, TENANT, posted())
        idle = outside.run_until_idle(env, 240)
        assert idle.returncode == 0, idle.stderr[-3000:]
        before = _views(env, api)
        dry_run = _gdpr(env, "--subject", SUBJECT, "--dry-run")
        after_dry_run = _views(env, api)
        delivered = len(target.received(ACCEPT_PATH))
        erase = _gdpr(env, "--subject", SUBJECT.upper())
        after = _views(env, api)
        stack = Stack(
            env=env,
            target=target,
            api=api,
            before=before,
            after_dry_run=after_dry_run,
            dry_run=dry_run,
            erase=erase,
            after=after,
            delivered_after_erase=_accepted_changes(target, delivered),
            again=_gdpr(env, "--subject", SUBJECT),
            unknown=_gdpr(env, "--subject", "nobody@nowhere.example"),
        )
        outside.post_events(
            api,
            env,
            TENANT,
            [envelope("LATE", 3, description=f"Ask {SUBJECT}", owner_users=[FOLDED])],
        )
        idle = outside.run_until_idle(env, 240)
        assert idle.returncode == 0, idle.stderr[-3000:]
        stack.late = outside.hub_export(env, TENANT)
        yield stack


def _named_records(views: Views) -> set[str]:
    records = outside.json_lines(views.hub)
    return {r["name"] for r in records if FOLDED in json.dumps(r).lower()}


def test_before_the_erasure_every_view_names_the_subject(stack: Stack) -> None:
    assert _named_records(stack.before) == {"CUSTOMERS", "ORDERS", "CONTACTS", "LEADS"}
    assert all(stack.before.naming().values()), stack.before.naming()


def test_the_erasure_prints_its_counts_and_every_view_forgets_the_subject(stack: Stack) -> None:
    summary = stack.erase.summary()
    assert summary["records_changed"] == 4
    stores = summary["stores"]
    assert stores["hub"] == 4 and stores["change_log"] >= 4
    assert stores["quarantine"] == 1 and stores["dead_letters"] >= 1 and stores["staging"] >= 1
    assert "dry_run" not in summary
    assert FOLDED not in (stack.erase.stdout + stack.erase.stderr).lower()
    assert not any(stack.after.naming().values()), stack.after.naming()
    records = {r["name"]: r for r in outside.json_lines(stack.after.hub)}
    assert len(records) == 6  # nothing deleted
    assert records["CUSTOMERS"]["attributes"]["description"] == "Ask [erased] about it"
    assert records["ORDERS"]["attributes"]["owner_users"] == ["ops"]
    assert records["CONTACTS"]["attributes"]["sample_values"] == [
        "[erased]",
        "someone@else.example",
    ]
    assert records["LEADS"]["attributes"]["description"] == "from [erased]."
    assert stack.after.quarantine.count("\n") == stack.before.quarantine.count("\n")


def test_the_target_received_the_changed_records_as_updated_changes(stack: Stack) -> None:
    changes = stack.delivered_after_erase
    assert {c["name"] for c in changes} == {"CUSTOMERS", "ORDERS", "CONTACTS", "LEADS"}
    assert {c["change"] for c in changes} == {"updated"}
    assert FOLDED not in json.dumps(changes).lower()


def test_a_dry_run_counts_the_same_and_changes_nothing(stack: Stack) -> None:
    dry, real = stack.dry_run.summary(), stack.erase.summary()
    assert dry["dry_run"] is True
    assert dry["records_changed"] == real["records_changed"]
    assert {k: v for k, v in dry["stores"].items() if k != "dead_letters"} == {
        k: v for k, v in real["stores"].items() if k != "dead_letters"
    }
    assert stack.after_dry_run == stack.before


def test_a_second_erasure_and_an_unknown_subject_give_zero_counts(stack: Stack) -> None:
    for step in (stack.again, stack.unknown):
        summary = step.summary()
        assert summary["records_changed"] == 0
        assert set(summary["stores"].values()) == {0}, summary


def test_an_event_naming_the_subject_after_the_erasure_is_masked_on_ingest(stack: Stack) -> None:
    late = {r["name"]: r for r in stack.late}["LATE"]
    assert late["attributes"]["description"] == "Ask [erased]"
    assert late["attributes"].get("owner_users") in ([], None)
    assert FOLDED not in json.dumps(stack.late).lower()


def test_the_audit_log_has_each_request_without_the_subject(stack: Stack) -> None:
    text = outside.lily_ok("audit", "export", "--tenant", TENANT, env=stack.env)
    entries = [e for e in outside.json_lines(text) if e["action"] == "gdpr.erase"]
    assert len(entries) == 4  # dry run, erasure, again, unknown subject
    assert all(e["decision"] == "allow" and e["status"] == "succeeded" for e in entries)
    request = stack.erase.summary()["request"]
    assert any(e["resource"].startswith(f"gdpr/erase/{request}") for e in entries)
    assert "erase-dry-run" in entries[0]["resource"]
    assert FOLDED not in text.lower()
    assert outside.lily("audit", "verify", "--tenant", TENANT, env=stack.env).returncode == 0


def test_bad_arguments_fail_in_one_line(stack: Stack) -> None:
    for args in (
        ("--tenant", "Not_A_Tenant", "--subject", SUBJECT),
        ("--tenant", TENANT),
        ("--tenant", TENANT, "--subject", SUBJECT, "--purge"),  # the local hub has no history
    ):
        proc = outside.lily("gdpr", "erase", *args, env=stack.env)
        assert proc.returncode == 2, (args, proc.stderr)
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("lily: error:"), line
        assert FOLDED not in line.lower()


def test_seal_gives_the_ui_a_subject_that_is_not_plaintext(stack: Stack) -> None:
    sealed = outside.lily_ok(
        "gdpr", "seal", "--tenant", TENANT, "--subject", SUBJECT, env=stack.env
    )
    assert sealed.startswith("lily-enc1:") and FOLDED not in sealed.lower()
    from_stdin = subprocess.run(
        [str(outside.LILY), "gdpr", "seal", "--tenant", TENANT, "--subject", "-"],
        input=SUBJECT + "\n",
        capture_output=True,
        text=True,
        env=stack.env,
        timeout=60,
    )
    assert from_stdin.returncode == 0 and from_stdin.stdout.startswith("lily-enc1:")


def test_the_requests_are_listed_done_and_without_the_subject(stack: Stack) -> None:
    text = outside.lily_ok("gdpr", "requests", "--tenant", TENANT, env=stack.env)
    requests = outside.json_lines(text)
    assert len(requests) == 3  # the erasure, the same again, the unknown subject
    assert {r["status"] for r in requests} == {"done"}
    assert stack.erase.summary()["request"] in {r["id"] for r in requests}
    assert FOLDED not in text.lower()
