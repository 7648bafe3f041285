"""`lily tenant delete --tenant T --yes`: off-board a tenant (CONTRACT.md §7): its data key
is destroyed first, then its files, inbox events and Dagster partition."""

from __future__ import annotations

import argparse

from lily_dagster.cli.common import (
    CliError,
    Subparsers,
    command_group,
    known_tenants,
    load_settings,
    print_json,
    tenant_arg,
)
from lily_dagster.settings import Settings


def register(sub: Subparsers) -> None:
    tenant = command_group(sub, "tenant", "a tenant as a whole", dest="tenant_command")
    delete = tenant.add_parser(
        "delete",
        help="destroy a tenant's data key, then its files, inbox events and partition",
    )
    delete.add_argument("--tenant", required=True, type=tenant_arg)
    delete.add_argument("--yes", action="store_true", help="confirm: this cannot be undone")
    delete.set_defaults(func=cmd_tenant_delete)


def cmd_tenant_delete(args: argparse.Namespace) -> int:
    from lily_dagster.lib.access.decision import Action
    from lily_dagster.lib.audit import operator_action
    from lily_dagster.lib.crypto import keyring
    from lily_dagster.lib.tenant_delete import delete_tenant

    if not args.yes:
        raise CliError(
            f"refusing to delete tenant {args.tenant!r} without --yes: its data key, hub, "
            "staging, inbox events, quarantine, dead letters and audit log go for good"
        )
    settings = load_settings()
    ring = keyring(settings)
    if args.tenant not in known_tenants(settings) | set(ring.tenants()):
        raise CliError(f"unknown tenant {args.tenant!r} in LILY_HOME={settings.home}")
    resource = f"tenant/{args.tenant}"
    with operator_action(settings, args.tenant, Action.TENANT_DELETE, resource, global_log=True):
        result = delete_tenant(settings, args.tenant)
        result.partition_removed = _remove_partition(settings, args.tenant)
    print_json(result.as_dict())
    return 0


def _remove_partition(settings: Settings, tenant: str) -> bool:
    """Remove the tenant's Dagster partition (its runs' history stays, holding counts and
    names only)."""
    from dagster import DagsterInstance

    from lily_dagster.defs.partitions import TENANTS
    from lily_dagster.runtime import prepare_dagster_home

    if not settings.dagster_home.is_dir():
        return False
    prepare_dagster_home(settings)
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        if tenant not in instance.get_dynamic_partitions(TENANTS):
            return False
        instance.delete_dynamic_partition(TENANTS, tenant)
        return True
