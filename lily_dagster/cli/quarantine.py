"""`lily quarantine`: rejected events (`export` them as JSON Lines; `replay` them through
every gate again, as a Dagster run in this process)."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
from typing import Any

from lily_dagster.cli.common import (
    CliError,
    Subparsers,
    command_group,
    print_error,
    print_json,
    reason_arg,
    state_settings,
    tenant_arg,
    write_lines,
)
from lily_dagster.settings import UNROUTED_TENANT, Settings

REPLAY_LOG = "replay.log"

# Dagster's wrappers around the error a step raised: the one an operator needs is inside.
_WRAPPER_ERRORS = {"RetryRequested", "DagsterExecutionStepExecutionError"}


def register(sub: Subparsers) -> None:
    quarantine = command_group(sub, "quarantine", "rejected events", dest="q_command")
    q_export = quarantine.add_parser("export", help="a tenant's quarantined events as JSON Lines")
    q_export.add_argument("--tenant", required=True, type=tenant_arg)
    q_export.set_defaults(func=cmd_quarantine_export)
    q_replay = quarantine.add_parser(
        "replay", help="send a tenant's quarantined events through every gate again"
    )
    q_replay.add_argument("--tenant", required=True, type=tenant_arg)
    q_replay.add_argument(
        "--reason", action="append", type=reason_arg, help="only this reason (repeatable)"
    )
    q_replay.set_defaults(func=cmd_quarantine_replay)


def cmd_quarantine_export(args: argparse.Namespace) -> int:
    from lily_dagster.lib.quarantine import QuarantineStore

    settings = state_settings(args.tenant)
    write_lines(QuarantineStore.from_settings(settings).export(args.tenant))
    return 0


def cmd_quarantine_replay(args: argparse.Namespace) -> int:
    if args.tenant == UNROUTED_TENANT:
        raise CliError(
            "_unrouted events name no valid tenant: fix the producer and send them again"
        )
    settings = state_settings(args.tenant)
    before = lily_quarantine_count(settings, args.tenant, args.reason)
    result = _replay_in_process(settings, args.tenant, args.reason or [])
    after = lily_quarantine_count(settings, args.tenant, args.reason)
    print_json(
        {
            "tenant": args.tenant,
            "reasons": args.reason or "all",
            "replayed": before,
            "still_quarantined": after,
            "run_id": result.run_id,
            "success": result.success,
        }
    )
    if result.success:
        return 0
    print_error(
        f"{describe_failed_run(result)} (Dagster's log of the run: the UI, or "
        f"{settings.logs_dir / REPLAY_LOG})"
    )
    return 1


def _replay_in_process(settings: Settings, tenant: str, reasons: list[str]) -> Any:
    """Run the tenant's quarantine_replay_job in this process. What Dagster prints meanwhile
    (a line per event, a failed step's traceback, warnings) goes to $LILY_HOME/logs/, not
    the terminal: the run and its whole log are in the instance, hence in the UI too."""
    from dagster import DagsterInstance

    from lily_dagster.defs.partitions import TENANTS
    from lily_dagster.lib.audit import OPERATOR_TAG, operator_subject
    from lily_dagster.runtime import prepare_dagster_home

    prepare_dagster_home(settings)
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    with (
        open(settings.logs_dir / REPLAY_LOG, "a") as log,
        contextlib.redirect_stderr(log),
        contextlib.redirect_stdout(log),
    ):
        from lily_dagster.definitions import defs as load_definitions

        with DagsterInstance.get() as instance:
            if not instance.has_dynamic_partition(TENANTS, tenant):
                instance.add_dynamic_partitions(TENANTS, [tenant])
            config = {"replay": True, "replay_reasons": reasons}
            return (
                load_definitions()
                .resolve_job_def("quarantine_replay_job")
                .execute_in_process(
                    run_config={"ops": {"landed_events": {"config": config}}},
                    partition_key=tenant,
                    instance=instance,
                    tags={
                        "lily/tenant": tenant,
                        "lily/source": "replay",
                        OPERATOR_TAG: operator_subject(),  # the run's audit entry names them
                    },
                    raise_on_error=False,
                )
            )


def _error_line(error: Any) -> str:
    """The first line of the innermost-but-useful error of a step failure's chain."""
    chain = []
    while error is not None:
        chain.append(error)
        error = error.cause
    useful = next((e for e in chain if e.cls_name not in _WRAPPER_ERRORS), chain[0])
    lines = [line.strip() for line in useful.message.splitlines() if line.strip()]
    if not lines:
        return useful.cls_name or "unknown error"
    return re.sub(r"^[\w.]+\.(\w+): ", r"\1: ", lines[0])  # the class without its module


def describe_failed_run(result: Any) -> str:
    """One line: the run id, each failed step with its error, the failed blocking checks."""
    from dagster import AssetCheckSeverity

    parts = [
        f"step {event.step_key} failed: {_error_line(event.step_failure_data.error)}"
        for event in result.get_step_failure_events()
    ]
    checks = [
        f"{e.asset_key.to_user_string()}.{e.check_name}"
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.severity == AssetCheckSeverity.ERROR
    ]
    if checks:
        parts.append(f"checks failed: {', '.join(checks)}")
    return f"run {result.run_id} failed: " + ("; ".join(parts) or "before any step")


def lily_quarantine_count(settings: Settings, tenant: str, reasons: list[str] | None) -> int:
    from lily_dagster.lib.quarantine import QuarantineStore

    return QuarantineStore.from_settings(settings).read(tenant, reasons or None).height
