"""What an operator launches from the Dagster UI does what it says: one asset of the ingest
chain materialised alone, a backfill of hub_records, a quarantine replay of mostly invalid
events, and each tenant's check outcomes. A real broker, the real sensor, real runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance, instance_for_test

from lily_dagster.definitions import defs as load_definitions
from lily_dagster.defs.ingest.sensors import kafka_events_sensor
from lily_dagster.lib.staging import StagingArea
from lily_dagster_tests import sensor_harness as harness
from lily_dagster_tests.defs.test_hooks_and_checks import (
    FIXED,
    FUTURE,
    WITH_FAILING_HOOK,
    column,
    execute,
    land,
    materialisation,
    names_in_hub,
    quarantined_names,
    replay,
    send,
    table,
    use_config,
)

defs = load_definitions()

ASSET_JOB = defs.resolve_implicit_global_asset_job_def()


def materialise_alone(instance: DagsterInstance, asset: str, tenant: str) -> bool:
    """What Materialize… of one asset for one tenant partition in the UI launches (with the
    asset's checks); whether it succeeded, every step it planned run (none skipped)."""
    outcome = ASSET_JOB.execute_in_process(
        asset_selection=[AssetKey(asset)],
        partition_key=tenant,
        instance=instance,
        raise_on_error=False,
    )
    skipped = [e.step_key for e in outcome.all_events if e.event_type_value == "STEP_SKIPPED"]
    assert not skipped, f"steps skipped: {skipped}"
    return outcome.success


def test_hub_records_alone_applies_no_leftover_and_records_the_hub_as_it_is(
    lily_home: Path, kafka_bootstrap: str, topic: str
) -> None:
    send(kafka_bootstrap, topic, [table("acme"), column("acme", "A"), table("globex")])
    staging = StagingArea(lily_home / "staging")
    with instance_for_test() as instance:
        (shared,) = land(instance)
        assert sorted(harness.tenants_of(shared)) == ["acme", "globex"]
        assert execute(instance, shared).success  # one run over the range acme..globex
        # Later batches wait, landed but not run (the tick reads the topic again from the
        # start: one more batch for each tenant): a hub_records run must not apply them.
        send(kafka_bootstrap, topic, [column("globex", "LATER")])
        land(instance)
        waiting = {t: staging.pending(t) for t in ("acme", "globex")}
        assert all(len(batches) == 1 for batches in waiting.values())
        for tenant in ("acme", "globex"):
            # Before: FileNotFoundError (the range run's outputs are under a range name).
            assert materialise_alone(instance, "hub_records", tenant)
        acme = materialisation(instance, "hub_records", "acme")
        assert acme["events_applied"] == 0 and acme["hub_active"] == 2
        assert acme["pending_batches"] == 1 and "tenant_ingest_job" in acme["input"]
        globex = materialisation(instance, "hub_records", "globex")
        assert globex["hub_active"] == 1 and globex["pending_batches"] == 1
        # The hub's own check ran with it, against that materialisation.
        gx = AssetCheckKey(AssetKey("hub_records"), "hub_records_gx_suite")
        record = instance.get_latest_asset_check_evaluation_record(gx)
        assert record is not None and record.event is not None
    assert names_in_hub(lily_home, "globex") == {"ORDERS"}
    assert {t: staging.pending(t) for t in ("acme", "globex")} == waiting
    assert staging.claims("globex") == {} and staging.claims("acme") == {}


def test_landed_events_alone_takes_no_batch(
    lily_home: Path, kafka_bootstrap: str, topic: str
) -> None:
    send(kafka_bootstrap, topic, [table("acme")])
    staging = StagingArea(lily_home / "staging")
    with instance_for_test() as instance:
        (request,) = land(instance)
        assert materialise_alone(instance, "landed_events", "acme")
        landed = materialisation(instance, "landed_events", "acme")
        assert landed["pending_batches"] == 1 and landed["events_in"] == 0
        # The batch is still free for the ingest run, which applies it.
        assert staging.claims("acme") == {}
        assert execute(instance, request).success
    assert names_in_hub(lily_home, "acme") == {"ORDERS"}


def test_a_replay_of_a_mostly_invalid_quarantine_applies_the_valid_part(
    lily_home: Path,
    kafka_bootstrap: str,
    topic: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = use_config(tmp_path, monkeypatch, WITH_FAILING_HOOK)
    late = [column("acme", f"LATE_{i}", event_time=FUTURE) for i in range(8)]
    good = [table("acme"), *(column("acme", f"C{i}") for i in range(12))]
    send(kafka_bootstrap, topic, [*good, *late, column("acme", "BOOM_1")])
    with instance_for_test() as instance:
        harness.drain(kafka_events_sensor, instance, None)
        assert len(quarantined_names(lily_home, "acme")) == 9
        config.write_text(FIXED)
        # The quarantine is 8 of 9 invalid, past any blocking share: the replay is judged
        # event by event, not failed by the share.
        monkeypatch.setenv("LILY_BLOCK_REJECT_SHARE", "0.1")
        monkeypatch.setenv("LILY_BLOCK_MIN_EVENTS", "5")
        outcome = replay(instance, "acme", [])
        assert outcome.success
        evaluation = next(
            e for e in outcome.get_asset_check_evaluations() if e.check_name == "validation_rules"
        )
        assert evaluation.passed and evaluation.partition == "acme"
        assert evaluation.metadata["failures_event_time_window"].value == 8
        assert "event by event" in str(evaluation.metadata["judged"].value)
    assert "BOOM_1" in names_in_hub(lily_home, "acme")
    assert quarantined_names(lily_home, "acme") == {f"LATE_{i}": "bad_event_time" for i in range(8)}
    assert StagingArea(lily_home / "staging").pending("acme") == []


def test_a_multi_tenant_run_reports_each_tenants_check_outcome(
    lily_home: Path, kafka_bootstrap: str, topic: str
) -> None:
    late = [column("globex", "LATE", event_time=FUTURE)]
    send(kafka_bootstrap, topic, [table("acme"), table("globex"), *late])
    with instance_for_test() as instance:
        (shared,) = land(instance)
        outcome = execute(instance, shared)
        assert outcome.success
        window = {
            e.partition: e.metadata["failures_event_time_window"].value
            for e in outcome.get_asset_check_evaluations()
            if e.check_name == "validation_rules"
        }
        assert window == {"acme": 0, "globex": 1}
        # The quarantine asset shows the rejected event itself (what it was, never its
        # content: the rows are stored in Dagster's event log), not only a count.
        quarantined = materialisation(instance, "quarantined_events", "globex")
        (row,) = [r.data for r in quarantined["latest_events"].records]
        assert row["reason"] == "bad_event_time" and row["event_id"].startswith("globex-LATE")
        assert row["payload"].startswith("Column ") and "/LATE (" in row["payload"]
        # What the check's page shows: a status per tenant partition, none left in progress.
        key = AssetCheckKey(AssetKey("validated_events"), "validation_rules")
        infos = instance.event_log_storage.get_asset_check_partition_info([key])
        assert {i.partition_key: i.latest_execution_status.value for i in infos} == {
            "acme": "SUCCEEDED",
            "globex": "SUCCEEDED",
        }
        # ...against the tenant's latest materialisation (else the UI calls it "Missing").
        for info in infos:
            assert info.latest_target_materialization_storage_id is not None
            assert info.latest_target_materialization_storage_id == (
                info.latest_materialization_storage_id
            )


def staged_batches(
    instance: DagsterInstance, tenant: str, action: str, batch_ids: list[str]
) -> dict[str, Any]:
    """What staged_batches_job launched from the UI's launchpad does; its output's figures."""
    outcome = defs.resolve_job_def("staged_batches_job").execute_in_process(
        run_config={
            "ops": {"staged_batches": {"config": {"action": action, "batch_ids": batch_ids}}}
        },
        partition_key=tenant,
        instance=instance,
        raise_on_error=False,
    )
    if not outcome.success:
        return {"failed": True}
    (output,) = [e for e in outcome.all_node_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.step_output_data.metadata
    return {k: v.value for k, v in metadata.items()}


def test_the_ui_lists_releases_and_discards_pending_batches(
    lily_home: Path, kafka_bootstrap: str, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LILY_BLOCK_MIN_EVENTS", "5")
    bad = [column("acme", f"LATE_{i}", event_time=FUTURE) for i in range(8)]
    send(kafka_bootstrap, topic, [table("acme"), *bad])
    staging = StagingArea(lily_home / "staging")
    with instance_for_test() as instance:
        (request,) = land(instance)
        blocked = execute(instance, request)
        assert not blocked.success  # the blocking check failed: the batch waits, claimed
        batch = request.tags["lily/batch"]
        listed = staged_batches(instance, "acme", "list", [])
        (row,) = [r.data for r in listed["batches"].records]
        assert row["batch_id"] == batch and row["state"] == "claimed"
        assert row["run_id"] == blocked.run_id and listed["pending_batches"] == 1
        assert staged_batches(instance, "acme", "release", [batch])["pending_batches"] == 1
        assert staging.claims("acme") == {}
        assert staged_batches(instance, "acme", "discard", [batch])["pending_batches"] == 0
        assert staged_batches(instance, "acme", "discard", ["no-such-batch"]) == {"failed": True}
    # Nothing is lost: every event of the discarded batch is in the quarantine.
    held = quarantined_names(lily_home, "acme")
    assert set(held) == {"ORDERS", *(f"LATE_{i}" for i in range(8))}
    assert held["ORDERS"] == "discarded_by_operator"
