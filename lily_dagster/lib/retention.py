"""What the run retention deletes (README: Retention), chosen from plain values so that the
choice is tested without Dagster; `defs/maintenance` asks Dagster and deletes.

Dagster deletes old sensor and schedule ticks itself (dagster.yaml `retention:`) but keeps
every run and its event log for good: with the demo traffic, ~275 MB an hour under
$LILY_HOME/dagster. A run is deleted once it ended more than LILY_RUN_RETENTION_DAYS ago,
unless something still reads it:
- it holds the latest materialisation of an asset partition (the UI's asset pages, and the
  propagation sensor, which reads the change log's head from a tenant's latest hub_records
  materialisation);
- it holds a claim on a pending batch (a run that failed in a step keeps its batches for an
  operator; were it gone, the recovery sensor would take it for a dead run and retry them).
Runs in flight never ended, so they are never chosen.

The assets' intermediate frames (io/<asset>/<run_id>/<partition>.parquet) are read only by
the steps of their own run, and by a re-execution of a failed run: a successful run's are
deleted once it ended, a failed or cancelled run's with the run; files that name no run
Dagster knows (an older layout, a run deleted before) once they are older than the
retention. Batches the hub applied (staging/<tenant>/applied/) go once they are older than
the retention too.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

SECONDS_PER_DAY = 86_400
ENDED = frozenset({"SUCCESS", "FAILURE", "CANCELED"})


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    status: str  # Dagster's DagsterRunStatus name: SUCCESS, FAILURE, STARTED, QUEUED, ...
    ended_at: float | None  # epoch seconds; None while it has not ended


def cutoff(now: float, days: int) -> float:
    """The end time before which a run is old enough to go."""
    return now - days * SECONDS_PER_DAY


def runs_to_delete(runs: Iterable[RunInfo], before: float, keep: Collection[str]) -> list[str]:
    """The runs that ended before `before`, but those in `keep`, by id."""
    return sorted(
        run.run_id
        for run in runs
        if run.status in ENDED
        and run.ended_at is not None
        and run.ended_at < before
        and run.run_id not in keep
    )


def io_files(io_dir: Path) -> list[Path]:
    """Every intermediate Parquet file under $LILY_HOME/io."""
    return sorted(io_dir.rglob("*.parquet")) if io_dir.is_dir() else []


def io_files_to_delete(
    files: Iterable[Path], runs: Mapping[str, RunInfo], before: float, deleted: Collection[str]
) -> list[Path]:
    """The files no run needs. Each is named by its folder after the run that wrote it
    (`runs`: those Dagster knows): a successful run's; a failed or cancelled run's once the
    run is `deleted` (until then, re-executing it from its failure reads them); and a file
    of a run Dagster does not know, once it is older than `before`."""
    return [
        path for path in files if _needed_by_none(path, runs.get(path.parent.name), before, deleted)
    ]


def _needed_by_none(
    path: Path, run: RunInfo | None, before: float, deleted: Collection[str]
) -> bool:
    if run is None:
        return _modified_before(path, before)
    return run.status == "SUCCESS" or (run.status in ENDED and run.run_id in deleted)


def applied_batch_files(staging_dir: Path, before: float) -> list[Path]:
    """The files of batches the hub applied (staging/<tenant>/applied/), landed before
    `before`: their manifests only keep a sensor tick read again after a crash, minutes
    later, from landing a batch twice."""
    found = staging_dir.glob("*/applied/*") if staging_dir.is_dir() else []
    return sorted(p for p in found if p.is_file() and _modified_before(p, before))


def _modified_before(path: Path, before: float) -> bool:
    try:
        return path.stat().st_mtime < before
    except FileNotFoundError:  # deleted meanwhile
        return False


def remove_files(files: Iterable[Path], root: Path | None = None) -> int:
    """Delete `files`, and with a `root` the folders under it they leave empty; how many
    files went."""
    removed = 0
    folders: set[Path] = set()
    for path in files:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed += 1
        folders.add(path.parent)
    if root is None:
        return removed
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        while folder != root and folder.is_relative_to(root):
            try:
                folder.rmdir()  # only if empty
            except OSError:
                break
            folder = folder.parent
    return removed
