"""Bulk backfills on a real LocalHub: every asset once, resumable after a kill with no batch
applied twice, shards that never write the same record, bad input quarantined or refused
with one clear error, and an S3 source."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import polars as pl
import pytest

from lily_dagster.bench.estate import write_estate
from lily_dagster.lib.backfill import BackfillError, BackfillReport, run_backfill
from lily_dagster.lib.hub.base import UpsertResult
from lily_dagster.lib.hub.local import LocalHub
from lily_dagster.lib.inventory import InventoryError
from lily_dagster.lib.metrics import MetricsStore
from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster.settings import LilyConfigFile
from lily_dagster_tests.support.envelopes import envelope, ev

ASSETS = 3_000


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("estate")
    write_estate(directory, ASSETS, tenant="acme", rows_per_file=1_000, seed=7)
    return directory


def load(tmp: Path, source: str, **kwargs: object) -> tuple[LocalHub, BackfillReport]:
    hub = LocalHub(tmp / "hub")
    report = run_backfill(
        hub, QuarantineStore(tmp / "quarantine"), LilyConfigFile(), "acme", source,
        batch_rows=500, **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip
    return hub, report


def test_every_asset_lands_once_and_a_rerun_changes_nothing(estate: Path, tmp_path: Path) -> None:
    hub, report = load(tmp_path, str(estate))
    assert report.rows_read == ASSETS and report.quarantined == 0
    records = {r["qualified_name"] for r in hub.export("acme")}
    assert report.applied >= ASSETS and len(records) >= ASSETS
    changes = hub.last_change("acme")
    _, again = load(tmp_path, str(estate))
    assert again.batches == 0 and again.resumed_at_row == ASSETS
    assert hub.last_change("acme") == changes


def test_a_killed_backfill_resumes_and_applies_no_batch_twice(estate: Path, tmp_path: Path) -> None:
    def kill_after_two(report: BackfillReport) -> None:
        if report.batches == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        load(tmp_path, str(estate), progress=kill_after_two)
    hub, resumed = load(tmp_path, str(estate))
    assert resumed.resumed_at_row == 1_000 and resumed.batches == ASSETS // 500 - 2
    log = hub.changes("acme", 0, 10 * ASSETS)
    created = log.filter(log["change"] == "created")["qualified_name"]
    assert created.n_unique() == created.len()  # each record created once
    assert set(created) == {r["qualified_name"] for r in hub.export("acme")}


@pytest.mark.parametrize("resume_rows", [300, 1_000])
def test_a_resumed_backfill_may_use_another_batch_size(
    estate: Path, tmp_path: Path, resume_rows: int
) -> None:
    """Checkpoints count rows, not batches: a resumed load with other batches skips those
    wholly committed and the committed head of the one the checkpoint falls inside, loses
    no record, and counts every row once in the pipeline metrics."""

    def kill_after_three(report: BackfillReport) -> None:
        if report.batches == 3:
            raise KeyboardInterrupt

    metrics = MetricsStore.in_home(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        load(tmp_path, str(estate), progress=kill_after_three, metrics=metrics)
    hub = LocalHub(tmp_path / "hub")
    resumed = run_backfill(
        hub, QuarantineStore(tmp_path / "quarantine"), LilyConfigFile(), "acme", str(estate),
        batch_rows=resume_rows, metrics=metrics,
    )  # fmt: skip
    assert resumed.resumed_at_row == 1_500
    log = hub.changes("acme", 0, 10 * ASSETS)
    created = log.filter(log["change"] == "created")["qualified_name"]
    assert created.n_unique() == created.len() == ASSETS
    assert hub.status_counts("acme") == {"ACTIVE": ASSETS}
    # Committed: rows 1-1500. Files hold 1,000 rows and a batch never spans two: with 300
    # the batch of rows 1301-1600 is cut to 1501-1600, with 1,000 rows 1001-2000 to 1501-2000.
    assert resumed.applied == ASSETS - 1_500
    counters, _ = metrics.samples()
    by_stage = {labels["stage"]: v for name, labels, v in counters if name == "lily_events_total"}
    assert by_stage == {"landed": ASSETS, "valid": ASSETS, "applied": ASSETS}


class SlowLocalHub(LocalHub):
    """A real LocalHub whose writes hold their transaction a while: the next batch is
    prepared (and looks names up in the hub) meanwhile."""

    def _expire_orphans(self, *args: Any, **kwargs: Any) -> UpsertResult:
        time.sleep(0.3)
        return super()._expire_orphans(*args, **kwargs)


def test_lineage_ends_written_by_the_batch_in_flight_are_not_made_placeholders(
    tmp_path: Path,
) -> None:
    # Batch 0: ten tables. Batch 1: processes reading them (and one reading a table found
    # nowhere), prepared (lineage check included) while batch 0 is still being written.
    schema = "default/snowflake/1/DB/S"
    parent = {"parent_qualified_name": schema}
    tables = [ev(f"t{i}", f"{schema}/T{i}", 0, attributes=parent) for i in range(10)]
    processes = [
        ev(
            f"p{i}",
            f"{schema}/P{i}",
            0,
            type_name="Process",
            inputs=[f"{schema}/T{i}"],
            outputs=[f"{schema}/T{(i + 1) % 10}"],
        )
        for i in range(9)
    ] + [ev("p9", f"{schema}/P9", 0, type_name="Process", inputs=[f"{schema}/ELSEWHERE"])]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "events.jsonl").write_text(
        "".join(json.dumps(e) + "\n" for e in tables + processes)
    )
    hub = SlowLocalHub(tmp_path / "hub")
    config = LilyConfigFile.model_validate({"hooks": {"pre_ingest": ["lineage-check"]}})
    report = run_backfill(
        hub, QuarantineStore(tmp_path / "q"), config, "acme", str(tmp_path / "in"),
        batch_rows=10,
    )  # fmt: skip
    # The one end found nowhere (looked up in the hub while batch 0 was being written)
    # gets its placeholder; the ends batch 0 wrote get none.
    assert report.batches == 2 and report.applied == 21
    records = hub.records("acme")
    placeholders = records.filter(pl.col("attributes").str.contains("lily_reference"))
    assert records.height == 21
    assert placeholders["qualified_name"].to_list() == [f"{schema}/ELSEWHERE"]


def test_shards_split_the_input_and_never_write_the_same_record(
    estate: Path, tmp_path: Path
) -> None:
    reports = [load(tmp_path, str(estate), shards=3, shard=i)[1] for i in range(3)]
    assert sum(r.rows_in_shard for r in reports) == ASSETS
    assert all(r.rows_in_shard > ASSETS // 6 for r in reports)  # roughly even
    hub = LocalHub(tmp_path / "hub")
    log = hub.changes("acme", 0, 10 * ASSETS)
    created = log.filter(log["change"] == "created")["qualified_name"]
    assert created.n_unique() == created.len()
    whole, _ = load(tmp_path / "whole", str(estate))
    assert {r["qualified_name"] for r in hub.export("acme")} == {
        r["qualified_name"] for r in whole.export("acme")
    }


@pytest.mark.parametrize(("shards", "shard"), [(0, 0), (3, 3), (2, -1)])
def test_a_bad_shard_spec_is_one_clear_error(
    estate: Path, tmp_path: Path, shards: int, shard: int
) -> None:
    with pytest.raises(BackfillError, match="--shard"):
        load(tmp_path, str(estate), shards=shards, shard=shard)


def database(attributes: dict[str, Any]) -> dict[str, Any]:
    return envelope(
        "default/snowflake/1/DB",
        event_id="g",
        source="s",
        event_time="2026-11-24T10:00:00Z",
        type_name="Database",
        attributes=attributes,
    )


def test_invalid_rows_are_quarantined_with_reasons_the_rest_land(tmp_path: Path) -> None:
    good = database(attributes={})
    lines = [
        json.dumps(good),
        json.dumps({**good, "event_id": "bad-op", "op": "merge"}),
        json.dumps({**good, "event_id": "other-tenant", "tenant": "globex"}),
        "{not json",
    ]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "events.jsonl").write_text("\n".join(lines) + "\n")
    _, report = load(tmp_path, str(tmp_path / "in"))
    assert report.applied == 1 and report.quarantined == 3
    reasons = sorted(QuarantineStore(tmp_path / "quarantine").read("acme")["reason"].to_list())
    assert reasons == ["malformed_json", "tenant_mismatch", "unknown_op"]


def test_nan_and_bytes_that_are_not_utf8_are_quarantined_byte_for_byte(tmp_path: Path) -> None:
    """NaN and Infinity (not JSON) in JSON Lines or in a Parquet float are malformed_json
    and never reach the hub; a line that is not UTF-8 is kept as its exact bytes."""
    good = database(attributes={"score": 0.5})
    nan_line = json.dumps({**good, "event_id": "nan"}).replace("0.5", "NaN").encode()
    inf_line = json.dumps({**good, "event_id": "inf"}).replace("0.5", "[-Infinity]").encode()
    latin1 = json.dumps({**good, "event_id": "caf\u00e9"}, ensure_ascii=False).encode("latin-1")
    (tmp_path / "in").mkdir()
    lines = [json.dumps(good).encode(), nan_line, inf_line, latin1, b"\xff\xfe{}"]
    (tmp_path / "in" / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    parquet = pl.DataFrame([{**good, "event_id": "p-nan"}, {**good, "event_id": "p-ok"}])
    parquet = parquet.with_columns(
        pl.col("asset").struct.with_fields(
            pl.struct(score=pl.Series([float("nan"), 0.25])).alias("attributes")
        )
    )
    parquet.write_parquet(tmp_path / "in" / "part.parquet")
    hub, report = load(tmp_path, str(tmp_path / "in"))
    assert report.quarantined == 5
    store = QuarantineStore(tmp_path / "quarantine")
    records = [json.loads(line) for line in store.export("acme")]
    by_id = {r["event_id"]: r for r in records if r["event_id"] in ("nan", "inf", "p-nan")}
    assert {k: r["reason"] for k, r in by_id.items()} == dict.fromkeys(
        ["nan", "inf", "p-nan"], "malformed_json"
    )
    assert by_id["nan"]["raw"] == nan_line.decode()
    not_text = sorted(base64.b64decode(r["raw_base64"]) for r in records if r["raw"] is None)
    assert not_text == sorted([latin1, b"\xff\xfe{}"])
    # g and p-ok name one record: p-ok wins the tie (the larger event_id)
    assert [(r["event_id"], r["attributes"]) for r in hub.export("acme")] == [
        ("p-ok", {"score": 0.25})
    ]


def test_parquet_rows_refused_by_a_later_gate_are_kept_with_their_envelope(
    estate: Path, tmp_path: Path
) -> None:
    """Parquet is decoded without each row's JSON; the rows validation refuses still reach
    the quarantine with it, as the row-by-row reader writes it (replayable)."""
    first = pl.read_parquet(sorted(estate.glob("*.parquet"))[0]).head(20)
    bad = first.with_columns(
        pl.when(pl.int_range(pl.len()) == 3)
        .then(pl.col("asset").struct.with_fields(pl.lit("").alias("name")))
        .otherwise(pl.col("asset"))
        .alias("asset")
    )
    (tmp_path / "in").mkdir()
    bad.write_parquet(tmp_path / "in" / "part.parquet")
    _, report = load(tmp_path, str(tmp_path / "in"))
    assert report.applied == 19 and report.quarantined == 1
    kept = QuarantineStore(tmp_path / "quarantine").read("acme")
    assert kept["reason"].to_list() == ["empty_field"]
    envelope = json.loads(kept["raw"][0])
    assert envelope["asset"]["name"] == "" and envelope["event_id"] == bad["event_id"][3]
    assert kept["quarantine_id"][0] is not None


def test_a_shard_spec_that_does_not_line_up_with_a_load_under_way_is_refused(
    estate: Path, tmp_path: Path
) -> None:
    _, first = load(tmp_path, str(estate), shards=3, shard=0)
    assert first.shards_left == [1, 2]
    changes = LocalHub(tmp_path / "hub").last_change("acme")
    with pytest.raises(BackfillError, match=r"in 3 shards .*still to run: \[1, 2\]"):
        load(tmp_path, str(estate), shards=4, shard=0)
    assert LocalHub(tmp_path / "hub").last_change("acme") == changes  # nothing applied
    assert load(tmp_path, str(estate), shards=3, shard=2)[1].shards_left == [1]
    assert load(tmp_path, str(estate), shards=3, shard=1)[1].shards_left == []
    # The 3-way load is whole: loading the source again another way is allowed.
    _, again = load(tmp_path, str(estate), shards=4, shard=0)
    assert again.shards_left == [1, 2, 3] and again.created == 0


def test_a_truncated_parquet_file_is_refused_naming_it(estate: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    first = sorted(estate.glob("*.parquet"))[0]
    (broken / first.name).write_bytes(first.read_bytes()[:-200])
    with pytest.raises(InventoryError, match=first.name):
        load(tmp_path, str(broken))


def test_backfill_from_an_s3_prefix(estate: Path, tmp_path: Path, s3_env: str) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.create_bucket(Bucket="estates")
    for f in sorted(estate.glob("*.parquet")):
        s3.upload_file(str(f), "estates", f"acme/{f.name}")
    _, report = load(tmp_path, "s3://estates/acme/")
    assert report.rows_read == ASSETS and report.quarantined == 0


@pytest.mark.integration  # `lily` processes
def test_cli_backfill_prints_a_summary_and_refuses_bad_arguments(
    estate: Path, tmp_path: Path
) -> None:
    env = {"LILY_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    cli = [sys.executable, "-m", "lily_dagster.cli", "backfill", "--tenant", "acme"]
    done = subprocess.run(
        [*cli, "--source", str(estate), "--batch-rows", "1000"],
        capture_output=True, text=True, env=env, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["rows_read"] == ASSETS and summary["batches"] == 3
    assert "rows/s" in done.stderr  # progress
    bad = subprocess.run(
        [*cli, "--source", str(estate), "--shards", "2", "--shard", "5"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "--shard" in bad.stderr
