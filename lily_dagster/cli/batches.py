"""`lily batches`: a tenant's pending batches (landed, not yet in the hub): `list` them,
`release` one's claim, or `discard` it into the quarantine."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from lily_dagster.cli.common import (
    CliError,
    Subparsers,
    command_group,
    print_json,
    state_settings,
    tenant_arg,
)
from lily_dagster.settings import Settings


def register(sub: Subparsers) -> None:
    batches = command_group(
        sub,
        "batches",
        "a tenant's pending batches (landed, not yet in the hub)",
        dest="batches_command",
    )
    for name, func, text in (
        ("list", cmd_batches_list, "each pending batch and its state, as JSON Lines"),
        ("release", cmd_batches_release, "drop a batch's claim: the next run takes it"),
        ("discard", cmd_batches_discard, "move a batch's events to the quarantine"),
    ):
        command = batches.add_parser(name, help=text)
        command.add_argument("--tenant", required=True, type=tenant_arg)
        if name != "list":
            command.add_argument("--batch", required=True, help="its id (`lily batches list`)")
        command.set_defaults(func=func)


@contextlib.contextmanager
def _dagster_instance(settings: Settings) -> Iterator[Any]:
    """The Dagster instance under $LILY_HOME/dagster, or None where no Lily command ever
    made one (then no run can hold a batch there)."""
    if not (settings.dagster_home / "dagster.yaml").is_file():
        yield None
        return
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        yield instance


def cmd_batches_list(args: argparse.Namespace) -> int:
    from lily_dagster.lib.staging import StagingArea, list_batches

    settings = state_settings(args.tenant)
    batches = list_batches(StagingArea.from_settings(settings), args.tenant)
    held = any(b.run_id for b in batches)
    with _dagster_instance(settings) if held else contextlib.nullcontext() as instance:
        for batch in batches:
            line = batch.as_dict()
            if instance is not None and batch.run_id:
                run = instance.get_run_by_id(batch.run_id)
                line["run_status"] = run.status.value if run is not None else None
            print_json(line)
    return 0


def _act_on_batch(settings: Settings, action: Callable[[Any], dict[str, Any]]) -> int:
    """Release or discard a pending batch (`action`, given whether a run is in flight, as
    the Dagster instance says); prints its one-line JSON result."""
    from lily_dagster.defs.ingest.recovery import run_in_flight
    from lily_dagster.lib.staging import BatchError

    with _dagster_instance(settings) as instance:
        in_flight = None if instance is None else lambda run_id: run_in_flight(instance, run_id)
        try:
            result = action(in_flight)
        except BatchError as exc:
            raise CliError(str(exc)) from None
    print_json(result)
    return 0


def cmd_batches_release(args: argparse.Namespace) -> int:
    from lily_dagster.lib.staging import StagingArea, release_batch

    settings = state_settings(args.tenant)
    staging = StagingArea.from_settings(settings)
    return _act_on_batch(
        settings, lambda in_flight: release_batch(staging, args.tenant, args.batch, in_flight)
    )


def cmd_batches_discard(args: argparse.Namespace) -> int:
    from lily_dagster.lib.quarantine import QuarantineStore
    from lily_dagster.lib.staging import StagingArea, discard_batch

    settings = state_settings(args.tenant)
    staging = StagingArea.from_settings(settings)
    quarantine = QuarantineStore.from_settings(settings)
    return _act_on_batch(
        settings,
        lambda in_flight: discard_batch(staging, quarantine, args.tenant, args.batch, in_flight),
    )
