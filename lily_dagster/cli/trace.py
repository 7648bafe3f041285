"""`lily trace EVENT_ID --tenant T`: where an event is and what happened to it, as JSON
(`--log`: the same trail as JSON log lines, docs/operating.md)."""

from __future__ import annotations

import argparse
import sys

from lily_dagster.cli.common import Subparsers, print_json, state_settings, tenant_arg


def register(sub: Subparsers) -> None:
    trace = sub.add_parser(
        "trace",
        help="where an event is: its Kafka offset or inbox entry, batch, run, quarantine "
        "reason or hub version, and its deliveries (JSON)",
    )
    trace.add_argument("event_id", help="the event's `event_id`")
    trace.add_argument("--tenant", required=True, type=tenant_arg)
    trace.add_argument(
        "--log", action="store_true", help="the trail as JSON log lines, one per step"
    )
    trace.add_argument(
        "--hours",
        type=float,
        help="read only the batches landed in the last HOURS (default: every batch kept)",
    )
    trace.set_defaults(func=cmd_trace)


def cmd_trace(args: argparse.Namespace) -> int:
    from lily_dagster.lib.access.decision import Action
    from lily_dagster.lib.audit import operator_action
    from lily_dagster.lib.hub import open_hub
    from lily_dagster.lib.inbox import inbox_exists, open_inbox
    from lily_dagster.lib.logs import trail_lines
    from lily_dagster.lib.trace import trace_event

    settings = state_settings(args.tenant)
    inbox = open_inbox(settings) if inbox_exists(settings) else None
    try:
        with operator_action(settings, args.tenant, Action.EVENTS_TRACE, "events/trace"):
            hub = open_hub(settings).read_store()
            trail = trace_event(settings, args.tenant, args.event_id, hub, inbox, args.hours)
    finally:
        if inbox is not None:
            inbox.close()
    if args.log:
        for line in trail_lines(trail):
            print(line)
    else:
        print_json(trail, pretty=True)
    if not trail["found"]:
        print(
            f"lily: no trace of event {args.event_id!r} in tenant {args.tenant!r}", file=sys.stderr
        )
        return 1
    return 0
