"""`lily hub`: the metadata hub (`export`: a tenant's records as JSON Lines)."""

from __future__ import annotations

import argparse

from lily_dagster.cli.common import (
    Subparsers,
    command_group,
    state_settings,
    tenant_arg,
    write_lines,
)


def register(sub: Subparsers) -> None:
    hub = command_group(sub, "hub", "the metadata hub", dest="hub_command")
    export = hub.add_parser("export", help="a tenant's hub records as JSON Lines")
    export.add_argument("--tenant", required=True, type=tenant_arg)
    export.set_defaults(func=cmd_hub_export)


def cmd_hub_export(args: argparse.Namespace) -> int:
    from lily_dagster.lib.hub import open_hub
    from lily_dagster.lib.strict_json import dumps

    settings = state_settings(args.tenant)
    hub = open_hub(settings)
    # RFC 8259: no NaN
    write_lines(dumps(record, ensure_ascii=False) for record in hub.export(args.tenant))
    return 0
