"""StagingArea: durable landing of raw batches between a source and the assets."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

from lily_dagster.lib.staging import LANDED_SCHEMA, BatchManifest, StagingArea


def batch(n: int, prefix: str = "m") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "origin": [f"kafka:t/0/{prefix}{i}" for i in range(n)],
            "value": [f'{{"n": {i}, "p": "{prefix}"}}'.encode() for i in range(n)],
            "received_at": [datetime(2026, 11, 23, 10, 0, i, tzinfo=UTC) for i in range(n)],
        },
        schema=LANDED_SCHEMA,
    )


def tmp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_land_then_pending_and_read(tmp_path: Path) -> None:
    area = StagingArea(tmp_path / "staging")
    assert area.pending("acme") == []
    manifest = area.land("acme", "b-0002", "kafka", batch(3), {"offsets": {"t/0": [0, 2]}})
    area.land("acme", "b-0001", "webhook", batch(2, "w"), {})
    assert isinstance(manifest, BatchManifest)
    assert (manifest.batch_id, manifest.tenant, manifest.source, manifest.events) == (
        "b-0002",
        "acme",
        "kafka",
        3,
    )
    assert area.pending("acme") == ["b-0001", "b-0002"]  # sorted by id
    assert area.tenants_with_pending() == ["acme"]

    frame, manifests = area.read("acme", ["b-0002", "b-0001"])
    assert [m.batch_id for m in manifests] == ["b-0002", "b-0001"]
    assert manifests[0].details == {"offsets": {"t/0": [0, 2]}}
    assert manifests[0].events == 3
    assert frame.columns == [*LANDED_SCHEMA, "batch_id"]
    assert frame["batch_id"].to_list() == ["b-0002"] * 3 + ["b-0001"] * 2
    assert_frame_equal(frame.filter(pl.col("batch_id") == "b-0002").drop("batch_id"), batch(3))
    assert_frame_equal(frame.filter(pl.col("batch_id") == "b-0001").drop("batch_id"), batch(2, "w"))
    assert tmp_files(tmp_path) == []


def test_mark_applied_removes_from_pending(tmp_path: Path) -> None:
    area = StagingArea(tmp_path)
    area.land("acme", "b1", "kafka", batch(2), {})
    area.land("acme", "b2", "kafka", batch(2), {})
    area.mark_applied("acme", ["b1"])
    assert area.pending("acme") == ["b2"]
    area.mark_applied("acme", ["b2", "never-landed"])  # unknown ids are ignored
    assert area.pending("acme") == []
    assert area.tenants_with_pending() == []
    assert sorted(p.name for p in (tmp_path / "acme" / "applied").iterdir()) == [
        "b1.json",
        "b1.parquet",
        "b2.json",
        "b2.parquet",
    ]
    assert tmp_files(tmp_path) == []


def test_reading_an_applied_batch_skips_it(tmp_path: Path) -> None:
    area = StagingArea(tmp_path)
    area.land("acme", "b1", "kafka", batch(2), {})
    area.land("acme", "b2", "kafka", batch(4), {})
    area.mark_applied("acme", ["b1"])
    frame, manifests = area.read("acme", ["b1", "b2", "unknown"])
    assert [m.batch_id for m in manifests] == ["b2"]
    assert frame.height == 4
    assert set(frame["batch_id"]) == {"b2"}


def test_reading_nothing_gives_an_empty_frame_with_batch_id(tmp_path: Path) -> None:
    area = StagingArea(tmp_path)
    frame, manifests = area.read("acme", ["b1"])
    assert manifests == []
    assert frame.is_empty()
    assert frame.schema == pl.Schema({**LANDED_SCHEMA, "batch_id": pl.String()})


def test_landing_an_applied_batch_again_is_a_no_op(tmp_path: Path) -> None:
    area = StagingArea(tmp_path)
    area.land("acme", "b1", "kafka", batch(2), {})
    area.mark_applied("acme", ["b1"])
    applied = tmp_path / "acme" / "applied" / "b1.parquet"
    before = applied.read_bytes()
    area.land("acme", "b1", "kafka", batch(5, "again"), {})  # a replayed sensor tick
    assert area.pending("acme") == []
    assert list((tmp_path / "acme" / "pending").glob("*")) == []
    assert applied.read_bytes() == before
    frame, manifests = area.read("acme", ["b1"])
    assert frame.is_empty() and manifests == []


def test_landing_a_pending_batch_again_overwrites_it(tmp_path: Path) -> None:
    area = StagingArea(tmp_path)
    area.land("acme", "b1", "kafka", batch(2), {})
    area.land("acme", "b1", "kafka", batch(2), {})
    assert area.pending("acme") == ["b1"]
    frame, _ = area.read("acme", ["b1"])
    assert frame.height == 2
    assert tmp_files(tmp_path) == []


def test_tenants_are_separate(tmp_path: Path) -> None:
    area = StagingArea(tmp_path)
    area.land("acme", "b1", "kafka", batch(1), {})
    area.land("globex", "b1", "kafka", batch(3, "g"), {})
    assert area.tenants_with_pending() == ["acme", "globex"]
    area.mark_applied("acme", ["b1"])
    assert area.tenants_with_pending() == ["globex"]
    frame, _ = area.read("globex", ["b1"])
    assert frame["origin"].to_list() == [f"kafka:t/0/g{i}" for i in range(3)]


def test_binary_payloads_survive_exactly(tmp_path: Path) -> None:
    values = [b"\xff\xfe not utf-8", b"", b'{"a": "\xc3\xa9"}']
    frame = pl.DataFrame(
        {
            "origin": ["a", "b", "c"],
            "value": values,
            "received_at": [datetime(2026, 1, 1, tzinfo=UTC)] * 3,
        },
        schema=LANDED_SCHEMA,
    )
    area = StagingArea(tmp_path)
    area.land("acme", "b1", "webhook", frame, {})
    read, _ = area.read("acme", ["b1"])
    assert read["value"].to_list() == values


def test_claims_keep_a_run_s_batches_from_other_runs_until_applied(tmp_path: Path) -> None:
    area = StagingArea(tmp_path / "staging")
    for batch_id in ("b1", "b2", "b3"):
        area.land("acme", batch_id, "kafka", batch(1, batch_id), {})
    area.claim("acme", ["b1", "nope"], "run-a")  # a batch not pending is not claimed
    assert area.claimed_by("acme", "b1") == "run-a"
    assert area.claimed_by("acme", "nope") is None
    assert area.pending("acme") == ["b1", "b2", "b3"]  # still pending, only taken
    assert area.unclaimed("acme") == ["b2", "b3"]
    assert area.unclaimed("acme", owner="run-a") == ["b1", "b2", "b3"]  # its re-execution
    assert area.unclaimed("acme", min_age_s=3600) == []  # landed just now
    area.mark_applied("acme", ["b1"])
    assert area.claimed_by("acme", "b1") is None
    assert sorted(p.name for p in (tmp_path / "staging" / "acme" / "pending").iterdir()) == [
        "b2.json",
        "b2.parquet",
        "b3.json",
        "b3.parquet",
    ]
