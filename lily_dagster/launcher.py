"""LocalRunLauncher: Dagster's DefaultRunLauncher plus a run worker health check.

Dagster's run monitoring (dagster.yaml `run_monitoring`) notices a dead run worker only
through launchers that can check their workers (Kubernetes, Docker, ECS); the default,
local launcher cannot, so a run whose process died (kill -9, out of memory) stayed STARTED
for good and kept its tenant's run slot. This launcher looks up the pid the run worker
reported in its engine events (their `pid` metadata) and tells the monitor the
worker FAILED once that process is gone; the monitor then marks the run failed, and the
ingest sensor hands its batches to the next run (defs/ingest/recovery.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import DagsterEventType, DagsterRun
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class LocalRunLauncher(DefaultRunLauncher):
    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        started = self._worker_started(run)
        if started is None:  # not reported yet, or by another kind of worker: no verdict
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no run worker pid recorded")
        pid, reported_at = started
        if process_alive(pid, not_started_after=reported_at):
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"run worker process {pid} is gone (killed or crashed)"
        )

    def _worker_started(self, run: DagsterRun) -> tuple[int, float] | None:
        """The pid the run worker reported (its engine events' `pid` metadata: "Started
        process for run", "Executing steps in process"), and when."""
        records = self._instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.ENGINE_EVENT, ascending=False, limit=50
        ).records
        for record in records:
            event = record.event_log_entry.dagster_event
            data = event.engine_event_data if event is not None else None
            pid = data.metadata.get("pid") if data is not None else None
            if pid is not None and str(pid.value).isdigit():
                return int(str(pid.value)), record.event_log_entry.timestamp
        return None


def process_alive(pid: int, not_started_after: float | None = None) -> bool:
    """Whether process `pid` runs (not a zombie); with `not_started_after`, only if it
    started by then (a later process that reuses the pid is not the one asked about)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:  # no /proc (not Linux): ask the kernel, without the start-time check
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # exited, not yet reaped
        return False
    if not_started_after is None:
        return True
    started = _boot_time() + int(fields[19]) / _CLOCK_TICKS
    return started <= not_started_after + 1.0


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0
