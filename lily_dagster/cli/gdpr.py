"""`lily gdpr`: erasure of a data subject (CONTRACT.md §7, docs/gdpr.md): `erase` it from
every store of a tenant and send the changed records to the targets, `seal` it for a
launch of `gdpr_erasure_job` from the UI, list a tenant's erasure `requests`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from lily_dagster.cli.common import (
    CliError,
    Subparsers,
    command_group,
    print_json,
    state_settings,
    tenant_arg,
    write_lines,
)

if TYPE_CHECKING:
    from lily_dagster.lib.gdpr.subject import Subject
    from lily_dagster.settings import Settings

SUBJECT_HELP = "a user id or an e-mail address (case-insensitive); `-` reads it from stdin"


def register(sub: Subparsers) -> None:
    gdpr = command_group(sub, "gdpr", "erasure of a data subject (GDPR)", dest="gdpr_command")
    erase = gdpr.add_parser(
        "erase",
        help="erase a data subject from every store of a tenant; send the changed records "
        "to the targets; print a JSON summary",
    )
    erase.add_argument("--tenant", required=True, type=tenant_arg)
    erase.add_argument("--subject", required=True, help=SUBJECT_HELP)
    erase.add_argument("--dry-run", action="store_true", help="count what would change only")
    erase.add_argument(
        "--purge",
        action="store_true",
        help="LILY_HUB=atlan: purge and recreate each changed asset (its Atlan audit "
        "history of the old values goes too)",
    )
    erase.set_defaults(func=cmd_gdpr_erase)
    seal = gdpr.add_parser(
        "seal",
        help="the subject sealed with the tenant's key, for gdpr_erasure_job's `subject` "
        "(nothing in plaintext in Dagster's storage)",
    )
    seal.add_argument("--tenant", required=True, type=tenant_arg)
    seal.add_argument("--subject", required=True, help=SUBJECT_HELP)
    seal.set_defaults(func=cmd_gdpr_seal)
    requests = gdpr.add_parser("requests", help="a tenant's erasure requests as JSON Lines")
    requests.add_argument("--tenant", required=True, type=tenant_arg)
    requests.set_defaults(func=cmd_gdpr_requests)


def _subject(value: str) -> str:
    """The subject as given, or the first line of stdin for `-` (kept out of the process
    list and the shell's history)."""
    if value != "-":
        return value
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise CliError("--subject -: stdin held no subject")
    return line


def _warn(message: str) -> None:
    print(f"lily: warning: {message}", file=sys.stderr)


def cmd_gdpr_erase(args: argparse.Namespace) -> int:
    from lily_dagster.lib.gdpr.erase import (
        deliver_changes,
        delivery_summary,
        erase_subject,
        unfinished_requests,
    )
    from lily_dagster.lib.gdpr.subject import Subject

    settings = state_settings(args.tenant)
    subject = Subject(_subject(args.subject))
    for problem in _masking_gaps(settings, args.tenant, subject):
        _warn(problem)
    summary = erase_subject(settings, args.tenant, subject, args.dry_run, purge=args.purge)
    result = summary.as_dict()
    code = 0
    if not args.dry_run and (summary.records or summary.resumed):
        delivered = delivery_summary(deliver_changes(settings, args.tenant))
        result["targets"] = delivered
        failed = [name for name, r in delivered.items() if r["error"]]
        if failed:
            _warn(f"targets unavailable: {', '.join(failed)}; the propagation sensor retries")
            code = 1
    left = [r for r in unfinished_requests(settings, args.tenant) if r != summary.request_id]
    if left:
        result["unfinished_requests"] = left
        _warn(
            f"interrupted erasure requests of {args.tenant}: {', '.join(left)}; run "
            "`lily gdpr erase` with their subjects again to complete them"
        )
    print_json(result)
    return code


def _masking_gaps(settings: Settings, tenant: str, subject: Subject) -> list[str]:
    """Why events naming the subject that arrive later would not be masked on ingest."""
    from lily_dagster.lib.gdpr.mask import findable
    from lily_dagster.lib.hooks import tenant_chain

    gaps = []
    if not findable(subject):
        gaps.append(
            "the subject is not a single token (letters, digits, . _ % + - @): the "
            "erased-subjects hook cannot find it in events that arrive later"
        )
    chain = [h.name for h in tenant_chain(settings.config, tenant, "pre_ingest")]
    if "erased-subjects" not in chain:
        gaps.append(
            f"tenant {tenant}'s pre_ingest hooks (LILY_CONFIG) leave out erased-subjects: "
            "events that arrive later are not masked"
        )
    return gaps


def cmd_gdpr_seal(args: argparse.Namespace) -> int:
    from lily_dagster.lib.crypto import cipher_for
    from lily_dagster.lib.gdpr.subject import Subject

    settings = state_settings(args.tenant)
    subject = Subject(_subject(args.subject))
    cipher = cipher_for(settings, args.tenant)
    if not cipher.enabled:
        raise CliError("LILY_ENCRYPTION is off: there is no key to seal the subject with")
    print(cipher.seal_text(subject.value))
    return 0


def cmd_gdpr_requests(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from lily_dagster.lib.gdpr.erased import GDPR_DIR
    from lily_dagster.lib.gdpr.requests import ErasureRequests

    settings = state_settings(args.tenant)
    requests = ErasureRequests(settings.home / GDPR_DIR).all(args.tenant)
    write_lines(json.dumps(asdict(r)) for r in requests)
    return 0
