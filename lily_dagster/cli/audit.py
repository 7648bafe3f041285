"""`lily audit`: a tenant's tamper-evident audit log (or the global one): `export` it as
JSON Lines, `verify` that its hash chain is whole."""

from __future__ import annotations

import argparse

from lily_dagster.cli.common import (
    CliError,
    Subparsers,
    command_group,
    load_settings,
    print_error,
    print_json,
    write_lines,
)
from lily_dagster.settings import ConfigError, Settings, validate_tenant


def register(sub: Subparsers) -> None:
    audit = command_group(sub, "audit", "the tamper-evident audit log", dest="audit_command")
    for name, func, text in (
        ("export", cmd_audit_export, "a tenant's audit log as JSON Lines"),
        ("verify", cmd_audit_verify, "check that a tenant's audit log is whole (exit 1 if not)"),
    ):
        command = audit.add_parser(name, help=text)
        which = command.add_mutually_exclusive_group(required=True)
        which.add_argument("--tenant", type=_tenant, help="the tenant's log")
        which.add_argument(
            "--global",
            dest="global_log",
            action="store_true",
            help="the global log (tenant deletions, requests naming no valid tenant)",
        )
        command.set_defaults(func=func)


def _tenant(value: str) -> str:
    try:
        return validate_tenant(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _log(args: argparse.Namespace) -> tuple[Settings, str | None]:
    """The settings, and the tenant whose log (None: the global one), which must exist."""
    from lily_dagster.lib.audit import AuditLog

    settings = load_settings()
    tenant = None if args.global_log else args.tenant
    path = AuditLog(settings.audit_dir).path(tenant)
    if not path.is_file():
        raise CliError(f"no audit log at {path} (nothing audited there, or a wrong LILY_HOME)")
    return settings, tenant


def cmd_audit_export(args: argparse.Namespace) -> int:
    from lily_dagster.lib.audit import AuditLog

    settings, tenant = _log(args)
    write_lines(AuditLog(settings.audit_dir).lines(tenant))
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from lily_dagster.lib.audit import AUDIT_GLOBAL, AuditLog

    settings, tenant = _log(args)
    result = AuditLog(settings.audit_dir).verify(tenant)
    if result.bad_seq is not None:
        which = f"of tenant {tenant}" if tenant else "global"
        print_error(f"audit log {which} is broken at seq {result.bad_seq}: {result.reason}")
        return 1
    print_json({"tenant": tenant or AUDIT_GLOBAL, "entries": result.entries, "head": result.head})
    return 0
