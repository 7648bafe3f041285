"""Running Lily's Dagster instance locally: DAGSTER_HOME set-up, the daemon, idleness."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from lily_dagster.defs.partitions import TENANTS
from lily_dagster.lib import processes
from lily_dagster.lib.dagster_storage import (
    POSTGRES_STORAGE,
    check_reachable,
    check_schema,
    storage_environment,
)
from lily_dagster.lib.hub import open_hub
from lily_dagster.lib.inbox import inbox_exists, open_inbox
from lily_dagster.lib.kafka_source import (
    KafkaCursor,
    KafkaUnavailableError,
    offset_resets_path,
    parse_cursor,
    read_batch,
    read_offset_resets,
)
from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster.lib.staging import StagingArea
from lily_dagster.settings import ConfigError, Settings

DAGSTER_YAML = Path(__file__).with_name("dagster.yaml")
KAFKA_SENSOR = "kafka_events_sensor"
INBOX_SENSOR = "webhook_inbox_sensor"
DEFINITIONS_MODULE = "lily_dagster.definitions"


def prepare_dagster_home(settings: Settings) -> Path:
    """$LILY_HOME/dagster with the project's dagster.yaml (LILY_LOG_LEVEL filled in, and the
    PostgreSQL storage when LILY_DAGSTER_PG_URL is set, whose server must answer); returns it."""
    if settings.dagster_pg_url:
        check_reachable(settings.dagster_pg_url)
    os.environ.update(storage_environment(settings.dagster_pg_url))  # for this process too
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    text = instance_yaml(settings)
    if not target.exists() or target.read_text() != text:
        partial = target.with_suffix(".yaml.tmp")
        partial.write_text(text)
        os.replace(partial, target)  # a daemon reading it meanwhile sees one or the other
    create_storage(home, settings.dagster_pg_url)
    return home


_PYTHON_LOG_LEVEL = re.compile(r"^(\s*python_log_level:\s*)\w+", re.MULTILINE)


def instance_yaml(settings: Settings) -> str:
    """The project's dagster.yaml with `python_logs.python_log_level` set to LILY_LOG_LEVEL:
    the level of what runs log to their console (Dagster's DEBUG events, one line per step
    output and check, were 80% of the output), not of what Dagster stores (every event)."""
    text = DAGSTER_YAML.read_text()
    rendered, found = _PYTHON_LOG_LEVEL.subn(rf"\g<1>{settings.log_level}", text, count=1)
    if not found:
        raise ConfigError(f"{DAGSTER_YAML}: python_logs.python_log_level is missing")
    if settings.dagster_pg_url:
        # The URL itself stays in the environment (it may hold a password).
        rendered += "\n# LILY_DAGSTER_PG_URL is set: Dagster's storage is PostgreSQL.\n"
        rendered += yaml.safe_dump(POSTGRES_STORAGE, sort_keys=False)
    return rendered


def dagster_dev_command(settings: Settings, host: str, port: int) -> list[str]:
    """`dagster dev` for `lily dev`, through `dagster_dev_main`, at LILY_LOG_LEVEL."""
    return [
        sys.executable,
        "-m",
        "lily_dagster.runtime",
        "dagster",
        "dev",
        "-m",
        DEFINITIONS_MODULE,
        "--host",
        host,
        "--port",
        str(port),
        "--log-level",
        settings.log_level.lower(),
    ]


def _not_the_copied_yaml_warning(record: logging.LogRecord) -> bool:
    return "will not be used to configure Dagster" not in record.getMessage()


def dagster_dev_main(argv: list[str]) -> None:
    """Dagster's own CLI (`argv`: dagster dev ...) less a misleading warning: run from the
    project's folder, `dagster dev` says its dagster.yaml "will not be used" since
    DAGSTER_HOME is elsewhere; it is used, `lily` copies it there. (Its SupersessionWarning
    is silenced by importing lily_dagster.)"""
    from dagster._cli import main

    logging.getLogger("dagster").addFilter(_not_the_copied_yaml_warning)
    sys.argv = argv
    main()


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DAGSTER_HOME=str(settings.dagster_home),
        LILY_HOME=str(settings.home),
        LILY_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        LILY_KAFKA_TOPICS=",".join(settings.kafka_topics),
        **storage_environment(settings.dagster_pg_url),
    )
    env.update(extra)
    return env


def kafka_has_backlog(settings: Settings, cursor: KafkaCursor) -> bool | None:
    """Whether any message waits past `cursor`; None when Kafka is unreachable.

    Probed by reading, not from high watermarks, which some brokers (Tansu) under-report.
    A cursor offset the broker no longer has (past a partition's end, below its start) is
    read from the partition's start, and counts as work left until the sensor has reported
    it and moved its cursor there.
    """
    try:
        probe = read_batch(
            settings.kafka_bootstrap, settings.kafka_topics, cursor, max_events=1, max_seconds=5
        )
    except KafkaUnavailableError:
        return None
    return bool(probe.messages) or not probe.drained or bool(probe.resets)


@dataclass
class IdleReport:
    idle: bool
    backlog: bool | None  # messages wait that the sensor has not read; None: Kafka down
    runs_in_flight: int
    pending_batches: int
    details: dict[str, Any] = field(default_factory=dict)


def reset_sensor_cursor(settings: Settings, name: str) -> bool:
    """Forget a sensor's cursor, keeping its running/stopped status; False if it had none."""
    from dagster import DagsterInstance
    from dagster._core.scheduler.instigation import InstigatorType, SensorInstigatorData

    prepare_dagster_home(settings)
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            data = state.instigator_data
            if state.name == name and isinstance(data, SensorInstigatorData) and data.cursor:
                instance.update_instigator_state(state.with_data(data._replace(cursor=None)))
                return True
    return False


def sensor_cursor_raw(instance: Any, name: str) -> str | None:
    from dagster._core.scheduler.instigation import InstigatorType

    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.name == name and state.instigator_data is not None:
            return state.instigator_data.cursor
    return None


def sensor_cursor(instance: Any, name: str) -> KafkaCursor:
    return parse_cursor(sensor_cursor_raw(instance, name))


def runs_in_flight(instance: Any) -> int:
    """How many runs are queued, starting, running or being cancelled."""
    from dagster import RunsFilter

    from lily_dagster.defs.ingest.recovery import IN_FLIGHT

    count: int = instance.get_runs_count(RunsFilter(statuses=list(IN_FLIGHT)))
    return count


def batches_awaiting_a_run(staging: StagingArea, instance: Any = None) -> int:
    """Pending batches a sensor will still request a run for: ones no run took (a sweep
    follows), ones a multi-tenant run left to a run of their tenant alone, and (given the
    instance) ones a dead run holds, which the sweep releases. Batches a run took that
    failed in a step wait for an operator and are not counted."""
    from lily_dagster.defs.ingest.recovery import held_by_dead_runs

    return sum(
        len(staging.unclaimed(tenant))
        + len(staging.isolated(tenant))
        + (len(held_by_dead_runs(instance, staging, tenant)) if instance is not None else 0)
        for tenant in staging.tenants_with_pending()
    )


def propagation_behind(instance: Any, settings: Settings) -> dict[str, dict[str, int]]:
    """Per tenant, the targets whose delivered (or dead-lettered) position is behind the
    tenant's change log, with the number of changes still to deliver."""
    from lily_dagster.lib.propagation import Position, position_path

    if not settings.config.targets:
        return {}
    hub = open_hub(settings)
    behind: dict[str, dict[str, int]] = {}
    for tenant in instance.get_dynamic_partitions(TENANTS):
        targets = [] if tenant.startswith("_") else settings.config.targets_of(tenant)
        head = hub.last_change(tenant) if targets else 0
        for target in targets:
            delivered = Position.load(
                position_path(settings.propagation_dir, tenant, target.name)
            ).delivered
            if delivered < head:
                behind.setdefault(tenant, {})[target.name] = head - delivered
    return behind


def propagation_failed(instance: Any, tenant: str) -> bool:
    """Whether the tenant's latest propagation run failed in a step (its target is down: the
    sensor pauses, and `lily run` reports the target as behind rather than waiting for it).
    A delivery run that died is not a target's failure: the sensor goes on at once."""
    from lily_dagster.defs.propagation.assets import target_failure_ended_at

    return target_failure_ended_at(instance, tenant) is not None


def check_idle(instance: Any, settings: Settings) -> IdleReport:
    """Idle: every source drained, no run in flight, no pending batch a sensor would still
    request a run for, and every target caught up with its tenant's change log (or its
    latest delivery run failed: the summary names it)."""
    backlog = kafka_has_backlog(settings, sensor_cursor(instance, KAFKA_SENSOR))
    in_flight = runs_in_flight(instance)
    staging = StagingArea.from_settings(settings)
    pending = sum(len(staging.pending(t)) for t in staging.tenants_with_pending())
    awaiting = batches_awaiting_a_run(staging, instance)
    inbox_backlog = 0
    if inbox_exists(settings):
        inbox_backlog = open_inbox(settings).pending(sensor_cursor_raw(instance, INBOX_SENSOR))
    drained = backlog is False and inbox_backlog == 0 and in_flight == 0 and awaiting == 0
    behind: dict[str, dict[str, int]] = {}
    if drained:  # the hub is read only while no run writes it
        behind = propagation_behind(instance, settings)
    waiting_for = [t for t in behind if not propagation_failed(instance, t)]
    return IdleReport(
        idle=drained and not waiting_for,
        backlog=backlog,
        runs_in_flight=in_flight,
        pending_batches=pending,
        details={"batches_awaiting_a_run": awaiting, "propagation_behind": behind},
    )


def start_daemon(
    settings: Settings, log_path: Path, owner: str = "lily run"
) -> subprocess.Popen[bytes]:
    """The Dagster daemon of settings.home, in a process group of its own recorded in
    `$LILY_HOME/run/daemon.pid`; a daemon that a killed `lily` left behind for this
    LILY_HOME is stopped first, and a live one refuses (ProcessError)."""
    pidfile = processes.DaemonPidfile(settings.home)
    pidfile.acquire(owner)
    try:
        prepare_dagster_home(settings)
        fail_runs_of_a_stopped_stack(settings)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            daemon = [sys.executable, "-m", "dagster._daemon", "run", "-m", DEFINITIONS_MODULE]
            return processes.spawn(
                [*daemon, "--log-level", settings.log_level.lower()],
                env=child_env(settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                pidfile=pidfile,
            )
    except BaseException:
        pidfile.release()
        raise


def fail_runs_of_a_stopped_stack(settings: Settings) -> list[str]:
    """Fail the runs still starting or running when a new daemon owner of this LILY_HOME
    starts (call it after `DaemonPidfile.acquire`). With the local launcher a run's
    process belongs to the stack that launched it, and the pidfile has just stopped whatever
    a killed stack left, so nothing will ever start or finish those runs. Failed now, with
    the reason, their run slots free at once and the recovery sensor gives their batches to
    the next run; left alone, a run killed while STARTING (no worker pid to check yet) held
    its tenants until run monitoring's start timeout. Returns their run ids."""
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
    from dagster._core.launcher import DefaultRunLauncher

    stranded = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        if not isinstance(instance.run_launcher, DefaultRunLauncher):
            return []  # runs of another launcher (a Kubernetes job) outlive the daemon
        runs = instance.get_runs(RunsFilter(statuses=stranded))
        for run in runs:
            instance.report_run_failed(
                run,
                "The Lily stack that launched this run stopped (killed or crashed) before "
                "the run ended; failed when the next `lily` started, so that its batches go "
                "to the next run of its tenants.",
            )
        return [run.run_id for run in runs]


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Stop a child and its whole process group (SIGTERM, SIGKILL after `timeout`)."""
    processes.stop(proc, grace_s=timeout)


def run_summary(instance: Any, settings: Settings, started: float) -> dict[str, Any]:
    """Per-tenant hub and quarantine figures plus run outcomes, as `lily run` prints them,
    and the Kafka offset resets (events lost) recorded since `started` (time.monotonic())."""
    from dagster import DagsterRunStatus, RunsFilter

    hub = open_hub(settings)
    quarantine = QuarantineStore.from_settings(settings)
    staging = StagingArea.from_settings(settings)
    tenants = sorted(set(instance.get_dynamic_partitions(TENANTS)) | set(quarantine.tenants()))
    behind = propagation_behind(instance, settings)
    per_tenant: dict[str, Any] = {}
    for tenant in tenants:
        counts = hub.status_counts(tenant) if not tenant.startswith("_") else {}
        per_tenant[tenant] = {
            "hub_active": counts.get("ACTIVE", 0),
            "hub_deleted": counts.get("DELETED", 0),
            "quarantined": quarantine.read(tenant).height,
            "quarantined_by_reason": quarantine.counts_by_reason(tenant),
            "pending_batches": len(staging.pending(tenant)),
        }
        if not tenant.startswith("_") and settings.config.targets_of(tenant):
            per_tenant[tenant]["targets_behind"] = behind.get(tenant, {})
    runs = {
        status.value.lower(): instance.get_runs_count(RunsFilter(statuses=[status]))
        for status in (
            DagsterRunStatus.SUCCESS,
            DagsterRunStatus.FAILURE,
            DagsterRunStatus.CANCELED,
        )
    }
    elapsed = time.monotonic() - started
    since = datetime.now(UTC) - timedelta(seconds=elapsed)
    resets = read_offset_resets(offset_resets_path(settings.home), since=since)
    return {
        "seconds": round(elapsed, 1),
        "runs": runs,
        "tenants": per_tenant,
        "kafka_offset_resets": resets,
    }


class NotIdleError(RuntimeError):
    pass


def create_storage(dagster_home: Path, pg_url: str | None = None) -> None:
    """Create the instance's schemas before any Dagster process starts: a daemon and a
    webserver (or this process) creating them at once race on alembic's version table, and
    one of them dies. A PostgreSQL database with an older Dagster's schema is refused."""
    from dagster import DagsterInstance

    from lily_dagster.defs.partitions import TENANTS

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        if pg_url:
            check_schema(instance, pg_url, str(dagster_home))
        instance.get_runs(limit=1)
        instance.get_dynamic_partitions(TENANTS)
        instance.all_instigator_state()
        instance.event_log_storage.get_asset_records()


def run_until_idle(
    settings: Settings, timeout_s: float = 900, poll_s: float = 1.0, owner: str = "lily run"
) -> dict[str, Any]:
    """Run the real Dagster daemon until Kafka is drained and no run is queued or running.

    Idle must hold on two polls in a row: between a sensor tick landing a batch and its
    run being queued, the state can look idle for an instant.
    """
    from dagster import DagsterInstance

    started = time.monotonic()
    prepare_dagster_home(settings)
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    log_path = settings.home / "logs" / "daemon.log"
    daemon = start_daemon(settings, log_path, owner)
    instance = DagsterInstance.get()
    try:
        idle_polls = 0
        report = None
        while time.monotonic() - started < timeout_s:
            time.sleep(poll_s)
            if daemon.poll() is not None:
                raise NotIdleError(
                    f"Dagster daemon exited with code {daemon.returncode}; see {log_path}"
                )
            report = check_idle(instance, settings)
            idle_polls = idle_polls + 1 if report.idle else 0
            if idle_polls >= 2:
                break
        else:
            why = (
                "Kafka unreachable"
                if report and report.backlog is None
                else json.dumps(report.__dict__ if report else {})
            )
            raise NotIdleError(f"not idle after {timeout_s:.0f}s: {why}")
    finally:
        stop_process(daemon)
    return run_summary(instance, settings, started)


# `lily dev` starts `python -m lily_dagster.runtime dagster dev ...` (dagster_dev_command).
if __name__ == "__main__":
    dagster_dev_main(sys.argv[1:])
