"""What the run retention deletes (lib/retention.py), without Dagster."""

from __future__ import annotations

import os
from pathlib import Path

from lily_dagster.lib.retention import (
    RunInfo,
    applied_batch_files,
    cutoff,
    io_files,
    io_files_to_delete,
    remove_files,
    runs_to_delete,
)

DAY = 86_400.0
NOW = 1_800_000_000.0


def run(run_id: str, status: str = "SUCCESS", days_ago: float | None = 10) -> RunInfo:
    return RunInfo(run_id, status, None if days_ago is None else NOW - days_ago * DAY)


def test_cutoff_is_days_before_now() -> None:
    assert cutoff(NOW, 7) == NOW - 7 * DAY


def test_only_runs_that_ended_before_the_cutoff_and_are_not_kept_go() -> None:
    runs = [
        run("old-success"),
        run("old-failure", "FAILURE"),
        run("old-canceled", "CANCELED"),
        run("recent", days_ago=2),
        run("latest-materialisation"),
        run("holds-a-claim", "FAILURE"),
        run("started-long-ago", "STARTED", days_ago=None),
        run("queued", "QUEUED", days_ago=None),
        # an ended status with no end time recorded: not known to be old, kept
        run("no-end-time", days_ago=None),
    ]
    keep = {"latest-materialisation", "holds-a-claim"}
    assert runs_to_delete(runs, cutoff(NOW, 7), keep) == [
        "old-canceled",
        "old-failure",
        "old-success",
    ]
    assert runs_to_delete(runs, cutoff(NOW, 7), keep | {"old-success"}) == [
        "old-canceled",
        "old-failure",
    ]


def write(path: Path, days_ago: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PAR1")
    at = NOW - days_ago * DAY
    os.utime(path, (at, at))
    return path


def test_io_files_no_run_needs(tmp_path: Path) -> None:
    io = tmp_path / "io"
    files = {
        "success": write(io / "landed_events" / "r-success" / "acme.parquet", 0),
        "failed": write(io / "landed_events" / "r-failed" / "acme.parquet", 1),
        "failed-deleted": write(io / "validated_events" / "r-gone" / "acme.parquet", 9),
        "running": write(io / "landed_events" / "r-running" / "acme.parquet", 30),
        "unknown-old": write(io / "landed_events" / "acme.parquet", 9),  # an older layout
        "unknown-new": write(io / "hub_records" / "r-unknown" / "acme.parquet", 1),
    }
    runs = {
        "r-success": run("r-success", days_ago=0),
        "r-failed": run("r-failed", "FAILURE", days_ago=1),
        "r-gone": run("r-gone", "FAILURE", days_ago=9),
        "r-running": run("r-running", "STARTED", days_ago=None),
    }
    assert io_files(io) == sorted(files.values())
    chosen = io_files_to_delete(io_files(io), runs, cutoff(NOW, 7), deleted={"r-gone"})
    assert sorted(chosen) == sorted(
        [files["success"], files["failed-deleted"], files["unknown-old"]]
    )
    assert remove_files(chosen, io) == 3
    assert io_files(io) == sorted([files["failed"], files["running"], files["unknown-new"]])
    # Emptied run folders go; the asset folders that still hold files stay.
    assert not (io / "landed_events" / "r-success").exists()
    assert not (io / "validated_events").exists()
    assert (io / "landed_events").is_dir()
    assert io.is_dir()


def test_nothing_under_a_missing_io_folder(tmp_path: Path) -> None:
    assert io_files(tmp_path / "io") == []
    assert remove_files([tmp_path / "gone.parquet"], tmp_path) == 0


def test_applied_batches_older_than_the_retention(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    old = [write(staging / "acme" / "applied" / f"b1.{ext}", 9) for ext in ("json", "parquet")]
    write(staging / "acme" / "applied" / "b2.json", 1)
    write(staging / "acme" / "pending" / "b0.json", 30)  # pending: never
    write(staging / "acme" / "discarded" / "b3.json", 30)  # an operator's: kept
    assert applied_batch_files(staging, cutoff(NOW, 7)) == sorted(old)
    assert remove_files(old) == 2
    assert (staging / "acme" / "applied").is_dir()  # folders stay without a root
    assert applied_batch_files(tmp_path / "none", NOW) == []
