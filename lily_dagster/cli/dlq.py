"""`lily dlq`: the changes a propagation target refused (dead-lettered): `list` a tenant's,
`replay` them to the target."""

from __future__ import annotations

import argparse
from typing import Any

from lily_dagster.cli.common import (
    Subparsers,
    command_group,
    print_json,
    state_settings,
    tenant_arg,
    write_lines,
)
from lily_dagster.settings import Settings


def register(sub: Subparsers) -> None:
    dlq = command_group(sub, "dlq", "changes a target refused", dest="dlq_command")
    for name, func, text in (
        ("list", cmd_dlq_list, "a target's dead-lettered changes of a tenant as JSON Lines"),
        ("replay", cmd_dlq_replay, "send a target's dead-lettered changes of a tenant again"),
    ):
        command = dlq.add_parser(name, help=text)
        command.add_argument("--tenant", required=True, type=tenant_arg)
        command.add_argument("--target", required=True)
        command.set_defaults(func=func)


def _target(settings: Settings, tenant: str, name: str) -> Any:
    from lily_dagster.lib.propagation import configure_target

    return configure_target(settings.config, tenant, name)


def cmd_dlq_list(args: argparse.Namespace) -> int:
    from lily_dagster.lib.quarantine import QuarantineStore

    settings = state_settings(args.tenant)
    _target(settings, args.tenant, args.target)
    write_lines(
        QuarantineStore.from_settings(settings, settings.dlq_dir / args.target).export(args.tenant)
    )
    return 0


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    from lily_dagster.lib.access.decision import Action
    from lily_dagster.lib.audit import operator_action
    from lily_dagster.lib.hub import open_hub
    from lily_dagster.lib.metrics import MetricsStore
    from lily_dagster.lib.metrics.updates import propagation
    from lily_dagster.lib.propagation import Propagator

    settings = state_settings(args.tenant)
    target = _target(settings, args.tenant, args.target)
    propagator = Propagator.from_settings(settings, open_hub(settings))
    with operator_action(settings, args.tenant, Action.DLQ_REPLAY, f"dlq/{args.target}") as act:
        result = propagator.replay_dlq(args.tenant, target)
        if result.error:
            act.fail()
    behind, left = propagator.backlog(args.tenant, args.target)
    MetricsStore.from_settings(settings).try_record(
        propagation(args.tenant, args.target, behind, left)
    )
    print_json(
        {
            "tenant": args.tenant,
            "target": args.target,
            "delivered": result.delivered,
            "dead_lettered_again": result.dead_lettered,
            "withheld_by_access_rules": result.withheld,
            "still_dead_lettered": left,
            "error": result.error,
        }
    )
    return 1 if result.error else 0
