"""Outbound propagation end to end: events into Kafka → sensors and runs on a real Dagster
instance → hub → propagation runs → real HTTP receivers on loopback. Each target gets
exactly its changes once; a target down for a while gets everything when it is back, with
no duplicate by Idempotency-Key; a 4xx dead-letters, and a replay delivers; personal data
never reaches a public channel; bad target configuration fails at load."""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    Definitions,
    RunRequest,
    build_sensor_context,
    instance_for_test,
)

from lily_dagster.defs.ingest.sensors import kafka_events_sensor
from lily_dagster.defs.partitions import TENANTS
from lily_dagster.defs.propagation.assets import build_propagation
from lily_dagster.defs.resources import LilyResource
from lily_dagster.lib.audit import AuditLog
from lily_dagster.lib.broker import produce
from lily_dagster.lib.hub import open_hub
from lily_dagster.lib.metrics import MetricsStore
from lily_dagster.lib.propagation import check_target_config
from lily_dagster.lib.targets.builtin.webhook import verify_signature
from lily_dagster.settings import ConfigError, LilyConfigFile, Settings
from lily_dagster_tests import sensor_harness as harness
from lily_dagster_tests.support import envelopes
from lily_dagster_tests.support.receivers import RecordingReceiver

SECRET = "s3cret-for-the-audit-hook"
TABLE = "default/snowflake/1700000000/DB/SCH/CUSTOMERS"


def envelope(event_id: str, qn: str, type_name: str, minutes: int, **attributes: Any) -> bytes:
    event_time = f"2026-11-24T10:{minutes:02d}:00Z"
    body = envelopes.envelope(
        qn,
        event_id=event_id,
        event_time=event_time,
        type_name=type_name,
        attributes=attributes,
    )
    return envelopes.encode(body)


def estate(minutes: int = 0, description: str = "customers") -> list[tuple[bytes, bytes]]:
    rows = [
        envelope(f"t{minutes}", TABLE, "Table", minutes, description=description),
        envelope(f"e{minutes}", f"{TABLE}/EMAIL", "Column", minutes, parent_qualified_name=TABLE,
                 description="write to jdoe@acme.com"),
        envelope(f"a{minutes}", f"{TABLE}/AMOUNT", "Column", minutes, parent_qualified_name=TABLE),
    ]  # fmt: skip
    return [(json.loads(r)["asset"]["qualified_name"].encode(), r) for r in rows]


class Stack:
    """The ingest and propagation of one test: its receivers, config, instance."""

    def __init__(
        self,
        instance: DagsterInstance,
        kafka: str,
        topic: str,
        receivers: dict[str, RecordingReceiver],
    ):
        self.instance, self.kafka, self.topic, self.receivers = instance, kafka, topic, receivers
        self.cursor: str | None = None
        settings = Settings.from_env()
        check_target_config(settings.config)
        built = build_propagation(settings)
        self.sensor = built["sensors"][0]
        self.job = Definitions(
            assets=built["assets"], jobs=built["jobs"], resources={"lily": LilyResource()}
        ).resolve_job_def("propagation_job")

    def ingest(self, messages: list[tuple[bytes, bytes]]) -> None:
        produce(self.kafka, self.topic, messages)
        self.cursor, _ = harness.drain(kafka_events_sensor, self.instance, self.cursor)

    def propagate(self) -> list[bool]:
        """One propagation_sensor tick and the runs it asks for; their outcomes."""
        context = build_sensor_context(instance=self.instance, resources={"lily": LilyResource()})
        result = self.sensor(context)
        requests = [r for r in (result or []) if isinstance(r, RunRequest)]
        return [
            self.job.execute_in_process(
                partition_key=r.partition_key, instance=self.instance, tags=r.tags,
                raise_on_error=False,
            ).success
            for r in requests
        ]  # fmt: skip


@pytest.fixture
def receivers() -> Iterator[dict[str, RecordingReceiver]]:
    with RecordingReceiver() as audit, RecordingReceiver() as slack, RecordingReceiver() as teams:
        yield {"audit": audit, "slack": slack, "teams": teams}


@pytest.fixture
def stack(
    lily_home: Path,
    kafka_bootstrap: str,
    topic: str,
    receivers: dict[str, RecordingReceiver],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[Stack]:
    monkeypatch.setenv("AUDIT_HOOK_SECRET", SECRET)
    monkeypatch.setenv("LILY_PROPAGATION_RETRY_S", "0")
    config = tmp_path / "lily.yaml"
    config.write_text(
        f"""
tenants:
  - name: acme
hooks:
  pre_ingest: [owner-normalise, pii-classify, pii-mask]
targets:
  - name: audit-hook
    type: webhook
    url: {receivers["audit"].url}
    secret_env: AUDIT_HOOK_SECRET
    tenants: [acme]
    max_attempts: 2
    backoff_s: 0
    timeout_s: 2
  - name: data-news
    type: slack
    url: {receivers["slack"].url}
    channel: "#data-news"
    access: {{public: true}}
  - name: stewards
    type: teams
    url: {receivers["teams"].url}
"""
    )
    monkeypatch.setenv("LILY_CONFIG", str(config))
    with instance_for_test() as instance:
        yield Stack(instance, kafka_bootstrap, topic, receivers)


def webhook_changes(receiver: RecordingReceiver) -> dict[str, list[dict[str, Any]]]:
    """Changes received, by Idempotency-Key (a receiver that dedupes keeps one per key)."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for request in receiver.requests:
        assert verify_signature(request.body, request.header("X-Lily-Signature"), SECRET)
        key = request.header("Idempotency-Key")
        assert key
        changes = request.json()["changes"]
        assert by_key.setdefault(key, changes) == changes  # a retry is the same delivery
    return by_key


def test_each_target_gets_its_changes_once_and_pii_never_reaches_a_public_channel(
    stack: Stack, receivers: dict[str, RecordingReceiver]
) -> None:
    stack.ingest(estate())
    assert stack.propagate() == [True]
    deliveries = webhook_changes(receivers["audit"])
    assert len(receivers["audit"].requests) == 1
    (changes,) = deliveries.values()
    assert sorted((c["qualified_name"], c["change"], c["version"]) for c in changes) == [
        (TABLE, "created", 1),
        (f"{TABLE}/AMOUNT", "created", 1),
        (f"{TABLE}/EMAIL", "created", 1),
    ]
    body = receivers["audit"].requests[0].json()
    assert (body["tenant"], body["target"]) == ("acme", "audit-hook")
    email = next(c for c in changes if c["qualified_name"].endswith("EMAIL"))
    assert "PII" in email["classifications"]
    # Masked before the hub: masked in every delivery.
    everything = b"".join(r.body for rs in receivers.values() for r in rs.requests)
    assert b"jdoe@acme.com" not in everything and b"[email]" in everything
    # The public Slack channel never hears of the PII column; Teams (not public) does.
    slack = json.dumps(receivers["slack"].bodies())
    assert "EMAIL" not in slack and "AMOUNT" in slack
    assert "EMAIL" in json.dumps(receivers["teams"].bodies())
    # Nothing new: no run, nothing sent again.
    assert stack.propagate() == []
    assert len(receivers["audit"].requests) == 1


def test_changes_of_a_run_that_died_before_materialising_still_reach_the_targets(
    stack: Stack, receivers: dict[str, RecordingReceiver]
) -> None:
    stack.ingest(estate())
    assert stack.propagate() == [True]
    stack.ingest(estate(5, "all customers"))
    # As if its run was killed after applying its batches, before Dagster recorded the
    # materialisation that carries the change log's head.
    stack.instance.wipe_assets([AssetKey("hub_records")])
    assert stack.propagate() == [True]
    changes = webhook_changes(receivers["audit"])
    assert len(changes) == 2
    assert {c["version"] for batch in changes.values() for c in batch} == {1, 2}


def test_a_target_down_for_a_while_gets_everything_once_when_it_is_back(
    stack: Stack, receivers: dict[str, RecordingReceiver]
) -> None:
    stack.ingest(estate())
    assert stack.propagate() == [True]
    receivers["audit"].stop()
    stack.ingest(estate(5, "all customers"))
    assert stack.propagate() == [False]  # the audit hook is down: the run fails
    assert stack.propagate() == [False]  # still down; the other targets are up to date
    receivers["audit"].start()
    assert stack.propagate() == [True]
    deliveries = webhook_changes(receivers["audit"])
    received = [(c["qualified_name"], c["version"]) for cs in deliveries.values() for c in cs]
    assert len(received) == len(set(received))  # no duplicate across deliveries
    log = open_hub(Settings.from_env()).changes("acme", 0, 100)
    assert sorted(received) == sorted(zip(log["qualified_name"], log["version"], strict=True))
    # The other targets got the update once, while the audit hook was down.
    teams = receivers["teams"].bodies()
    assert len(teams) == 2 and "updated" in json.dumps(teams[1])


def lily(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lily_dagster.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_refusing_target_dead_letters_and_a_replay_delivers(
    stack: Stack, receivers: dict[str, RecordingReceiver]
) -> None:
    receivers["audit"].script([(400, "bad request")])
    stack.ingest(estate())
    assert stack.propagate() == [True]  # dead-lettered, not retried: the run goes on
    assert len(receivers["audit"].requests) == 1
    listed = lily("dlq", "list", "--tenant", "acme", "--target", "audit-hook")
    assert listed.returncode == 0, listed.stderr
    entries = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(entries) == 3 and {e["reason"] for e in entries} == {"target_rejected"}
    assert "answered 400" in entries[0]["detail"]
    assert dead_letters_gauge("audit-hook") == 3
    replayed = lily("dlq", "replay", "--tenant", "acme", "--target", "audit-hook")
    assert replayed.returncode == 0, replayed.stderr
    summary = json.loads(replayed.stdout)
    assert (summary["delivered"], summary["still_dead_lettered"]) == (3, 0)
    assert dead_letters_gauge("audit-hook") == 0  # the replay set it, not the next run
    assert len(receivers["audit"].requests[-1].json()["changes"]) == 3
    assert lily("dlq", "list", "--tenant", "acme", "--target", "audit-hook").stdout == ""
    # Each replay is in the tenant's audit log: the CLI's, then one from the UI.
    ui_replay = replay_job(stack.instance, "audit-hook", {"dagster/user": "ana@acme.com"})
    assert ui_replay.success
    cli_entry, ui_entry = audit_entries()
    assert (cli_entry["action"], cli_entry["resource"], cli_entry["status"]) == (
        "dlq.replay",
        "dlq/audit-hook",
        "succeeded",
    )
    assert cli_entry["sub"] == f"cli:{getpass.getuser()}"
    assert ui_entry["resource"] == f"dlq/audit-hook@run:{ui_replay.run_id}"
    assert (ui_entry["sub"], ui_entry["status"]) == ("dagster:ana@acme.com", "succeeded")


def dead_letters_gauge(target: str) -> float:
    """lily_dead_letters{tenant="acme", target} as the receiver would serve it."""
    _, gauges = MetricsStore.from_settings(Settings.from_env()).samples()
    found = [v for name, labels, v in gauges if name == "lily_dead_letters"
             and labels == {"tenant": "acme", "target": target}]  # fmt: skip
    assert len(found) == 1, gauges
    return found[0]


def replay_job(instance: DagsterInstance, target: str, tags: dict[str, str]) -> Any:
    """What launching dlq_replay_job from the UI runs."""
    built = build_propagation(Settings.from_env())
    job = Definitions(jobs=built["jobs"], resources={"lily": LilyResource()})
    return job.resolve_job_def("dlq_replay_job").execute_in_process(
        run_config={"ops": {"replay_dead_letters": {"config": {"target": target}}}},
        partition_key="acme",
        instance=instance,
        tags=tags,
        raise_on_error=False,
    )


def audit_entries() -> list[dict[str, Any]]:
    log = AuditLog(Settings.from_env().audit_dir)
    assert log.verify("acme").whole
    return log.read("acme")


def test_a_failed_dlq_replay_run_is_audited_as_failed(
    lily_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "lily.yaml"
    config.write_text(
        "tenants: [{name: acme}, {name: globex}]\n"
        "targets: [{name: hook, type: webhook, url: 'http://127.0.0.1:9/', tenants: [globex]}]\n"
    )
    monkeypatch.setenv("LILY_CONFIG", str(config))
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(TENANTS, ["acme"])
        outcome = replay_job(instance, "hook", {"lily/operator": "cli:ops", "user": "bo"})
    (failure,) = outcome.get_step_failure_events()  # acme has no such target
    assert "no target 'hook' for tenant acme" in failure.step_failure_data.error.message
    (entry,) = audit_entries()
    assert (entry["sub"], entry["status"]) == ("cli:ops", "failed")
    assert entry["resource"] == f"dlq/hook@run:{outcome.run_id}"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ({"name": "x", "type": "carrier-pigeon"}, "unknown target type 'carrier-pigeon'"),
        ({"name": "x", "type": "webhook", "secret_env": "AUDIT_HOOK_SECRET"}, "target 'x'"),
        ({"name": "x", "type": "webhook", "url": "http://h/", "secret_env": "NOPE_UNSET"},
         "NOPE_UNSET"),
    ],
)  # fmt: skip
def test_malformed_target_config_fails_at_load_with_one_line(
    target: dict[str, Any], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIT_HOOK_SECRET", SECRET)
    config = LilyConfigFile.model_validate({"tenants": [{"name": "acme"}], "targets": [target]})
    with pytest.raises(ConfigError, match=expected) as info:
        check_target_config(config)
    assert "\n" not in str(info.value)
