"""Hooks, blocking rule checks, quarantine replay and the GX suite through Dagster: a real
broker, the real sensor, real runs on a real (temporary) Dagster instance."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetKey,
    DagsterInstance,
    ExecuteInProcessResult,
    RunRequest,
    SensorResult,
    instance_for_test,
)

from lily_dagster.definitions import defs as load_definitions
from lily_dagster.defs.ingest.sensors import kafka_events_sensor
from lily_dagster.lib.audit import AuditLog
from lily_dagster.lib.broker import produce
from lily_dagster.lib.hooks import HookContext, register_hook
from lily_dagster.lib.hub.local import LocalHub
from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster.lib.staging import StagingArea
from lily_dagster_tests import sensor_harness as harness
from lily_dagster_tests.support import envelopes
from lily_dagster_tests.support.sealed import ciphers_at

defs = load_definitions()

TABLE = "default/snowflake/1700000000/DB/SCH/ORDERS"
RECENT = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
FUTURE = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
VALIDATED = AssetKey("validated_events")


@register_hook("test-dg-boom")
class BoomOnName:
    """A tenant's own hook with a bug: it fails on assets whose name contains BOOM."""

    stage = "pre_ingest"

    def configure(self, settings: dict[str, Any]) -> None:
        return None

    def apply(self, events: pl.DataFrame, config: None, ctx: HookContext) -> pl.DataFrame:
        if events.get_column("name").str.contains("BOOM").any():
            raise RuntimeError("cannot handle BOOM")
        return events


# --- helpers ------------------------------------------------------------------------------


def column(
    tenant: str,
    name: str,
    *,
    description: str | None = None,
    qualified_name: str | None = None,
    event_time: str = RECENT,
    owners: list[str] | None = None,
    parent: str = TABLE,
) -> dict[str, Any]:
    attributes: dict[str, Any] = {"parent_qualified_name": parent, "data_type": "VARCHAR"}
    if description is not None:
        attributes["description"] = description
    if owners is not None:
        attributes["owner_users"] = owners
    return envelopes.envelope(
        qualified_name or f"{TABLE}/{name}",
        event_id=f"{tenant}-{name}-{event_time}",
        tenant=tenant,
        event_time=event_time,
        type_name="Column",
        name=name,
        attributes=attributes,
    )


def table(tenant: str) -> dict[str, Any]:
    return envelopes.envelope(TABLE, event_id=f"{tenant}-table", tenant=tenant, event_time=RECENT)


def send(bootstrap: str, topic: str, envelopes: list[dict[str, Any]]) -> None:
    produce(
        bootstrap,
        topic,
        [(e["asset"]["qualified_name"].encode(), json.dumps(e).encode()) for e in envelopes],
    )


def use_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    path = tmp_path / "lily.yaml"
    path.write_text(text)
    monkeypatch.setenv("LILY_CONFIG", str(path))
    return path


def hub(home: Path, tenant: str) -> dict[str, dict[str, Any]]:
    return {
        r["qualified_name"]: r
        for r in LocalHub(home / "hub", ciphers=ciphers_at(home)).export(tenant)
    }


def quarantine(home: Path, tenant: str) -> pl.DataFrame:
    return QuarantineStore(home / "quarantine", ciphers_at(home)).read(tenant)


def quarantined_names(home: Path, tenant: str) -> dict[str, str]:
    """asset name → reason, read back from each quarantined raw payload."""
    frame = quarantine(home, tenant)
    names = [json.loads(raw)["asset"]["name"] for raw in frame.get_column("raw")]
    assert len(names) == len(set(names)), f"an event is quarantined twice: {sorted(names)}"
    return dict(zip(names, frame.get_column("reason").to_list(), strict=True))


def names_in_hub(home: Path, tenant: str) -> set[str]:
    return {r["name"] for r in hub(home, tenant).values()}


def materialisation(instance: DagsterInstance, asset: str, tenant: str) -> dict[str, Any]:
    records = instance.fetch_materializations(AssetKey(asset), limit=100).records
    for record in records:  # newest first
        mat = record.asset_materialization
        if mat is not None and mat.partition == tenant:
            return {k: v.value for k, v in mat.metadata.items()}
    raise AssertionError(f"no materialisation of {asset} for {tenant}")


def check_result(instance: DagsterInstance, check: str) -> tuple[str, AssetCheckEvaluation]:
    record = instance.get_latest_asset_check_evaluation_record(AssetCheckKey(VALIDATED, check))
    assert record is not None and record.event is not None, f"no evaluation of {check}"
    assert record.event.dagster_event is not None
    evaluation = record.event.dagster_event.event_specific_data
    assert isinstance(evaluation, AssetCheckEvaluation)
    return record.run_id, evaluation


def land(instance: DagsterInstance) -> list[RunRequest]:
    """One sensor tick: lands what the topic holds and returns the runs it requests."""
    result = harness.tick(kafka_events_sensor, instance, None)
    assert isinstance(result, SensorResult)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(
            request.partitions_def_name, list(request.partition_keys or [])
        )
    return [r for r in result.run_requests or [] if isinstance(r, RunRequest)]


def execute(instance: DagsterInstance, request: RunRequest) -> ExecuteInProcessResult:
    return harness.JOB.execute_in_process(
        run_config=request.run_config,
        partition_key=request.partition_key,
        instance=instance,
        tags=request.tags,
        raise_on_error=False,
    )


def replay(instance: DagsterInstance, tenant: str, reasons: list[str]) -> ExecuteInProcessResult:
    job = defs.resolve_job_def("quarantine_replay_job")
    return job.execute_in_process(
        run_config={
            "ops": {"landed_events": {"config": {"replay": True, "replay_reasons": reasons}}}
        },
        partition_key=tenant,
        instance=instance,
        raise_on_error=False,
    )


# --- hooks --------------------------------------------------------------------------------


def test_pii_chain_and_a_failing_tenant_hook(
    lily_home: Path,
    kafka_bootstrap: str,
    topic: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_config(
        tmp_path,
        monkeypatch,
        "hooks:\n"
        "  pre_ingest: [owner-normalise, pii-classify, pii-mask]\n"
        "tenants:\n"
        "  - name: globex\n"
        "    hooks:\n"
        "      pre_ingest: [owner-normalise, test-dg-boom]\n",
    )
    send(
        kafka_bootstrap,
        topic,
        [
            table("acme"),
            column("acme", "EMAIL", description="ask jdoe@acme.com or +44 20 7946 0958"),
            column("acme", "ORDER_ID", description="order key", owners=[" JDoe", "jdoe"]),
            table("globex"),
            column("globex", "EMAIL", description="jdoe@globex.com"),
            column("globex", "BOOM_1"),
            column("globex", "AMOUNT"),
            column("globex", "KABOOM"),
        ],
    )
    with instance_for_test() as instance:
        _, runs = harness.drain(kafka_events_sensor, instance, None)
        # One run for both tenants, each with its own chain and materialisations.
        assert [sorted(harness.tenants_of(r)) for r in runs] == [["acme", "globex"]]

        acme = hub(lily_home, "acme")
        email = acme[f"{TABLE}/EMAIL"]
        assert email["classifications"] == ["PII", "GDPR:personal-data", "PII:email"]
        assert email["attributes"]["description"] == "ask [email] or [phone]"
        order = acme[f"{TABLE}/ORDER_ID"]
        assert order["classifications"] == []
        assert order["attributes"]["owner_users"] == ["jdoe"]
        assert quarantine(lily_home, "acme").is_empty()

        enriched = materialisation(instance, "enriched_events", "acme")
        assert enriched["hooks"] == "owner-normalise, pii-classify, pii-mask"
        stats = enriched["hook_stats"]
        assert list(stats) == ["owner-normalise", "pii-classify", "pii-mask"]
        assert all(s["rows_in"] == 3 and s["rows_out"] == 3 for s in stats.values())

        # globex has its own chain: no PII hooks, and a hook that fails on two of its rows.
        assert names_in_hub(lily_home, "globex") == {"ORDERS", "EMAIL", "AMOUNT"}
        globex_email = hub(lily_home, "globex")[f"{TABLE}/EMAIL"]
        assert globex_email["classifications"] == []
        assert globex_email["attributes"]["description"] == "jdoe@globex.com"
        assert quarantined_names(lily_home, "globex") == {
            "BOOM_1": "hook_error",
            "KABOOM": "hook_error",
        }
        details = set(quarantine(lily_home, "globex").get_column("detail"))
        assert details == {"test-dg-boom: RuntimeError: cannot handle BOOM"}
        globex = materialisation(instance, "enriched_events", "globex")
        assert globex["quarantined_by_hooks"] == 2
        assert globex["hook_stats"]["test-dg-boom"]["rows_out"] == 3
        assert materialisation(instance, "quarantined_events", "globex")["quarantined"] == 2


# --- blocking rule checks -----------------------------------------------------------------


def bad_structure(tenant: str, name: str) -> dict[str, Any]:
    # A Column without its table segment: six segments instead of seven.
    schema = "default/snowflake/1700000000/DB/SCH"
    return column(tenant, name, qualified_name=f"{schema}/{name}", parent=schema)


def test_rule_check_reports_failures_and_passes_under_the_limit(
    lily_home: Path, kafka_bootstrap: str, topic: str
) -> None:
    good = [table("acme"), *(column("acme", f"C{i}") for i in range(7))]
    send(kafka_bootstrap, topic, [*good, bad_structure("acme", "X1"), bad_structure("acme", "X2")])
    with instance_for_test() as instance:
        (request,) = land(instance)
        outcome = execute(instance, request)
        assert outcome.success
        run_id, evaluation = check_result(instance, "validation_rules")
        assert run_id == outcome.run_id
        assert evaluation.passed
        metadata = {k: v.value for k, v in evaluation.metadata.items()}
        # One check for every rule: each rule's failures are in its metadata.
        assert metadata["failures_qualified_name_structure"] == 2 and metadata["rows"] == 10
        assert metadata["worst_rule"] == "qualified_name_structure"
        assert metadata["worst_share"] == 0.2 and metadata["limit"] == 0.5
        assert metadata["failures_parent_is_prefix"] == 0 and metadata["failing_rules"] == "none"
        assert metadata["failures_envelope_decodes"] == 0
    assert quarantined_names(lily_home, "acme") == {
        "X1": "bad_qualified_name",
        "X2": "bad_qualified_name",
    }
    assert len(names_in_hub(lily_home, "acme")) == 8


def test_rule_failing_most_of_a_batch_blocks_the_upsert_and_keeps_it_pending(
    lily_home: Path, kafka_bootstrap: str, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LILY_BLOCK_REJECT_SHARE", "0.1")
    monkeypatch.setenv("LILY_BLOCK_MIN_EVENTS", "5")  # this batch has 10 events
    good = [table("acme"), column("acme", "GOOD")]
    send(kafka_bootstrap, topic, [*good, *(bad_structure("acme", f"X{i}") for i in range(8))])
    with instance_for_test() as instance:
        (request,) = land(instance)
        outcome = execute(instance, request)
        assert not outcome.success
        evaluations = outcome.get_asset_check_evaluations()
        assert [(e.check_name, e.passed) for e in evaluations] == [("validation_rules", False)]
        _, evaluation = check_result(instance, "validation_rules")
        assert not evaluation.passed
        assert evaluation.metadata["failing_rules"].value == "qualified_name_structure"
        assert evaluation.metadata["failures_qualified_name_structure"].value == 8
        assert evaluation.metadata["limit"].value == 0.1
        assert outcome.asset_materializations_for_node("hub_records") == []
        assert not instance.fetch_materializations(AssetKey("hub_records"), limit=1).records
    # The batch waits for an operator; its rejected rows are in the quarantine already.
    assert StagingArea(lily_home / "staging").pending("acme") == [request.tags["lily/batch"]]
    assert set(quarantined_names(lily_home, "acme").values()) == {"bad_qualified_name"}
    assert len(quarantined_names(lily_home, "acme")) == 8
    assert hub(lily_home, "acme") == {}


def first_tick(instance: DagsterInstance) -> SensorResult:
    """The Kafka sensor's first tick, with the tenant partitions it adds registered."""
    first = harness.tick(kafka_events_sensor, instance, None)
    assert isinstance(first, SensorResult) and first.cursor
    harness.run_requested(
        instance, SensorResult(dynamic_partitions_requests=first.dynamic_partitions_requests)
    )
    return first


def test_a_blocked_batch_is_left_to_the_operator_by_later_runs_of_its_tenant(
    lily_home: Path, kafka_bootstrap: str, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LILY_BLOCK_REJECT_SHARE", "0.1")
    monkeypatch.setenv("LILY_BLOCK_MIN_EVENTS", "5")
    send(
        kafka_bootstrap, topic, [table("acme"), *(bad_structure("acme", f"X{i}") for i in range(8))]
    )
    with instance_for_test() as instance:
        first = first_tick(instance)
        (blocked,) = first.run_requests or []
        assert isinstance(blocked, RunRequest)
        assert not execute(instance, blocked).success
        # The next batch's run takes every pending batch no run took: not the blocked one.
        send(kafka_bootstrap, topic, [column("acme", "GOOD")])
        second = harness.tick(kafka_events_sensor, instance, first.cursor)
        assert isinstance(second, SensorResult)
        (request,) = second.run_requests or []
        assert isinstance(request, RunRequest)
        assert execute(instance, request).success
        assert materialisation(instance, "landed_events", "acme")["events_in"] == 1
    assert StagingArea(lily_home / "staging").pending("acme") == [blocked.tags["lily/batch"]]
    assert names_in_hub(lily_home, "acme") == {"GOOD"}


def test_a_tenant_failing_a_blocking_check_does_not_hold_back_the_others_in_a_shared_run(
    lily_home: Path, kafka_bootstrap: str, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LILY_BLOCK_REJECT_SHARE", "0.1")
    monkeypatch.setenv("LILY_BLOCK_MIN_EVENTS", "5")
    send(
        kafka_bootstrap,
        topic,
        [
            table("acme"),
            *(bad_structure("acme", f"X{i}") for i in range(8)),
            table("globex"),
            *(column("globex", f"G{i}") for i in range(6)),
        ],
    )
    staging = StagingArea(lily_home / "staging")
    with instance_for_test() as instance:
        first = first_tick(instance)
        # One run for both tenants' batches, over their range of tenant partitions.
        (shared,) = first.run_requests or []
        assert isinstance(shared, RunRequest)
        assert sorted(harness.tenants_of(shared)) == ["acme", "globex"]
        outcome = execute(instance, shared)
        assert outcome.success
        # globex reached the hub; acme's batch, which would fail a blocking check, was left
        # untouched (not quarantined, not applied) to a run of acme alone.
        assert names_in_hub(lily_home, "globex") == {"ORDERS", *(f"G{i}" for i in range(6))}
        assert hub(lily_home, "acme") == {}
        assert quarantine(lily_home, "acme").is_empty()
        batch = shared.tags["lily/batch"]
        assert staging.isolated("acme") == [batch] and staging.pending("globex") == []
        isolated = materialisation(instance, "validated_events", "acme")
        assert isolated["isolated_by_checks"] == "qualified_name_structure"
        assert materialisation(instance, "hub_records", "globex")["events_applied"] == 7
        assert all(e.passed for e in outcome.get_asset_check_evaluations())
        # The next tick requests that run; it fails the check and blocks, as a run of acme
        # alone always did, and its batch waits for an operator.
        second = harness.tick(kafka_events_sensor, instance, first.cursor)
        assert isinstance(second, SensorResult)
        (alone,) = second.run_requests or []
        assert isinstance(alone, RunRequest)
        assert alone.partition_key == "acme" and alone.tags["lily/source"] == "isolate"
        blocked = execute(instance, alone)
        assert not blocked.success
        _, evaluation = check_result(instance, "validation_rules")
        metadata = evaluation.metadata
        assert not evaluation.passed and metadata["failures_qualified_name_structure"].value == 8
        again = harness.tick(kafka_events_sensor, instance, first.cursor)
        assert isinstance(again, SensorResult) and not again.run_requests
    assert staging.pending("acme") == [batch] and staging.isolated("acme") == []
    assert staging.claimed_by("acme", batch) == blocked.run_id
    assert len(quarantined_names(lily_home, "acme")) == 8
    assert hub(lily_home, "acme") == {}


# --- quarantine replay --------------------------------------------------------------------

WITH_FAILING_HOOK = (
    "tenants:\n  - name: acme\n    hooks:\n      pre_ingest: [owner-normalise, test-dg-boom]\n"
)
FIXED = "tenants:\n  - name: acme\n"


def test_replay_returns_what_still_fails_and_applies_what_was_fixed(
    lily_home: Path,
    kafka_bootstrap: str,
    topic: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = use_config(tmp_path, monkeypatch, WITH_FAILING_HOOK)
    send(
        kafka_bootstrap,
        topic,
        [
            table("acme"),
            *(column("acme", f"C{i}") for i in range(5)),
            column("acme", "LATE_1", event_time=FUTURE),
            column("acme", "LATE_2", event_time=FUTURE),
            column("acme", "BOOM_1"),
            column("acme", "BOOM_2"),
        ],
    )
    with instance_for_test() as instance:
        harness.drain(kafka_events_sensor, instance, None)
        before = quarantine(lily_home, "acme")
        assert quarantined_names(lily_home, "acme") == {
            "LATE_1": "bad_event_time",
            "LATE_2": "bad_event_time",
            "BOOM_1": "hook_error",
            "BOOM_2": "hook_error",
        }

        # Changing nothing: the replayed events fail again and are back, once each.
        replay(instance, "acme", ["bad_event_time"])
        assert materialisation(instance, "landed_events", "acme")["replayed_from_quarantine"] == 2
        after = quarantine(lily_home, "acme")
        assert quarantined_names(lily_home, "acme") == {
            "LATE_1": "bad_event_time",
            "LATE_2": "bad_event_time",
            "BOOM_1": "hook_error",
            "BOOM_2": "hook_error",
        }
        assert after.height == before.height == 4
        assert sorted(after.get_column("quarantine_id")) == sorted(
            before.get_column("quarantine_id")
        )
        late = after.filter(pl.col("reason") == "bad_event_time")
        assert set(late.get_column("detail").str.contains("outside")) == {True}
        assert "LATE_1" not in names_in_hub(lily_home, "acme")

        # The tenant's hook fixed (removed): its victims reach the hub and leave the quarantine.
        config.write_text(FIXED)
        outcome = replay(instance, "acme", ["hook_error"])
        assert outcome.success
        assert {"BOOM_1", "BOOM_2"} <= names_in_hub(lily_home, "acme")
        assert quarantined_names(lily_home, "acme") == {
            "LATE_1": "bad_event_time",
            "LATE_2": "bad_event_time",
        }
        # Nothing left to replay: a replay run changes nothing.
        assert replay(instance, "acme", ["hook_error"]).success
        assert len(names_in_hub(lily_home, "acme")) == 8
    # Each replay run left one entry in the tenant's audit log (a UI launch: no user known).
    entries = AuditLog(lily_home / "audit").read("acme")
    assert [(e["action"], e["sub"], e["status"]) for e in entries] == [
        ("quarantine.replay", "dagster", "succeeded")
    ] * 3
    assert entries[1]["resource"] == f"quarantine?reasons=hook_error@run:{outcome.run_id}"


def test_replay_of_every_reason_loses_no_fixed_event_when_most_fail_again(
    lily_home: Path,
    kafka_bootstrap: str,
    topic: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = use_config(tmp_path, monkeypatch, WITH_FAILING_HOOK)
    send(
        kafka_bootstrap,
        topic,
        [
            table("acme"),
            *(column("acme", f"C{i}") for i in range(6)),
            *(column("acme", f"LATE_{i}", event_time=FUTURE) for i in range(3)),
            column("acme", "BOOM_1"),
            column("acme", "BOOM_2"),
        ],
    )
    with instance_for_test() as instance:
        harness.drain(kafka_events_sensor, instance, None)
        assert len(quarantined_names(lily_home, "acme")) == 5
        config.write_text(FIXED)
        replay(instance, "acme", [])  # every reason: 3 still too late, 2 now fine
        in_hub = names_in_hub(lily_home, "acme")
        held = quarantined_names(lily_home, "acme")
        assert held == {f"LATE_{i}": "bad_event_time" for i in range(3)} | {
            k: v for k, v in held.items() if k.startswith("BOOM")
        }
        # Each fixed event is in the hub or, at worst, still in the quarantine: never neither.
        for name in ("BOOM_1", "BOOM_2"):
            assert name in in_hub or name in held, f"{name} is in neither hub nor quarantine"


# --- Great Expectations suite -------------------------------------------------------------


def test_gx_suite_checks_every_tenant_hub(
    lily_home: Path, kafka_bootstrap: str, topic: str
) -> None:
    send(
        kafka_bootstrap,
        topic,
        [table("acme"), *(column("acme", f"C{i}") for i in range(4)), table("globex")],
    )
    job = defs.resolve_job_def("data_quality_job")
    with instance_for_test() as instance:
        cursor, _ = harness.drain(kafka_events_sensor, instance, None)
        outcome = job.execute_in_process(instance=instance)
        assert outcome.success
        (evaluation,) = outcome.get_asset_check_evaluations()
        assert evaluation.check_name == "hub_records_gx_suite"
        assert evaluation.passed
        metadata = {k: v.value for k, v in evaluation.metadata.items()}
        assert metadata["tenants_checked"] == 2
        assert metadata["tenants_failing"] == "none"
        results = metadata["results"]
        assert set(results) == {"acme", "globex"}
        assert results["acme"] == {"success": True, "rows_sampled": 5, "failed": []}
        assert results["globex"]["rows_sampled"] == 1

        # A hub of mostly deleted records is flagged, for that tenant only.
        deletes = [
            dict(column("globex", f"D{i}"), op="delete", event_id=f"del-{i}") for i in range(3)
        ]
        send(kafka_bootstrap, topic, deletes)
        harness.drain(kafka_events_sensor, instance, cursor)
        flagged = job.execute_in_process(instance=instance, raise_on_error=False)
        (evaluation,) = flagged.get_asset_check_evaluations()
        assert not evaluation.passed
        metadata = {k: v.value for k, v in evaluation.metadata.items()}
        assert metadata["tenants_failing"] == "globex"
        assert metadata["results"]["acme"]["success"] is True
        assert metadata["results"]["globex"]["failed"] == [
            "expect_column_values_to_be_in_set(status)"
        ]


def test_a_small_batch_never_blocks_whatever_share_fails(
    lily_home: Path, kafka_bootstrap: str, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 8 of 10 events break a rule, but 10 < LILY_BLOCK_MIN_EVENTS (default 100): the good
    # ones go on to the hub, the bad ones to the quarantine, the run succeeds.
    monkeypatch.setenv("LILY_BLOCK_REJECT_SHARE", "0.1")
    good = [table("acme"), column("acme", "GOOD")]
    send(kafka_bootstrap, topic, [*good, *(bad_structure("acme", f"X{i}") for i in range(8))])
    with instance_for_test() as instance:
        (request,) = land(instance)
        outcome = execute(instance, request)
        assert outcome.success
    assert len(names_in_hub(lily_home, "acme")) == 2
    assert set(quarantined_names(lily_home, "acme").values()) == {"bad_qualified_name"}
