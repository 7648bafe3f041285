"""Dagster's record of a LILY_HOME's runs, read from its instance storage while `lily` runs,
as the UI reads it: which steps started and finished, and each run worker's pid. A chaos
test watches it to kill a process at a chosen point of a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance
from dagster._core.instance.ref import InstanceRef

ENDED = (DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE, DagsterEventType.RUN_CANCELED)


@dataclass(frozen=True)
class StepEvent:
    run_id: str
    kind: str  # a DagsterEventType name: STEP_START, STEP_SUCCESS, RUN_SUCCESS, ...
    step: str | None


@dataclass
class RunObserver:
    dagster_home: Path
    events: list[StepEvent] = field(default_factory=list)
    worker_pids: dict[str, int] = field(default_factory=dict)
    _cursors: dict[str, str | None] = field(default_factory=dict)
    _instance: DagsterInstance | None = None
    _ended: set[str] = field(default_factory=set)

    def instance(self) -> DagsterInstance | None:
        if self._instance is None and (self.dagster_home / "dagster.yaml").exists():
            self._instance = DagsterInstance.from_ref(InstanceRef.from_dir(str(self.dagster_home)))
        return self._instance

    def poll(self) -> list[StepEvent]:
        """The events written since the last poll, every run's."""
        instance = self.instance()
        if instance is None:
            return []
        new: list[StepEvent] = []
        for run in instance.get_runs():
            if run.run_id in self._ended:
                continue
            connection = instance.get_records_for_run(
                run.run_id, cursor=self._cursors.get(run.run_id)
            )
            self._cursors[run.run_id] = connection.cursor
            for record in connection.records:
                event = record.event_log_entry.dagster_event
                if event is None:
                    continue
                if event.event_type == DagsterEventType.ENGINE_EVENT:
                    self._note_pid(run.run_id, event.engine_event_data)
                new.append(StepEvent(run.run_id, event.event_type.name, event.step_key))
                if event.event_type in ENDED:
                    self._ended.add(run.run_id)
        self.events.extend(new)
        return new

    def _note_pid(self, run_id: str, data: object) -> None:
        pid = getattr(data, "metadata", {}).get("pid") if data is not None else None
        if pid is not None and str(pid.value).isdigit():
            self.worker_pids[run_id] = int(str(pid.value))

    def saw(
        self, kind: str, step: str | None = None, run_id: str | None = None, since: int = 0
    ) -> bool:
        return any(
            e.kind == kind and (step is None or e.step == step) and run_id in (None, e.run_id)
            for e in self.events[since:]
        )

    def run_count(self) -> int:
        instance = self.instance()
        return 0 if instance is None else len(instance.get_runs())
