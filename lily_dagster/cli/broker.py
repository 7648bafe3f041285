"""`lily broker`: the embedded Kafka-compatible broker (Tansu) in the foreground."""

from __future__ import annotations

import argparse
import sys

from lily_dagster.cli.common import CliError, Subparsers, load_settings, port_arg
from lily_dagster.lib import processes
from lily_dagster.lib.broker import BrokerError
from lily_dagster.settings import EMBEDDED_BROKER_PORT

# The --storage of `lily broker` and `lily dev`.
STORAGE_HELP = (
    "Tansu's storage engine: memory://tansu/ (default: $LILY_BROKER_STORAGE, else in "
    "memory, lost when the broker stops), s3://bucket/ or postgres://user:pass@host/db"
)


def register(sub: Subparsers) -> None:
    broker = sub.add_parser("broker", help="embedded Kafka-compatible broker in the foreground")
    broker.add_argument("--port", type=port_arg, default=EMBEDDED_BROKER_PORT)
    broker.add_argument("--storage", help=STORAGE_HELP)
    broker.set_defaults(func=cmd_broker)


def broker_storage(args: argparse.Namespace) -> str:
    """--storage, else LILY_BROKER_STORAGE, else in memory; checked."""
    from lily_dagster.lib.broker import check_storage, storage_from_env

    if getattr(args, "storage", None):
        return check_storage(args.storage, "--storage")
    return storage_from_env()


def cmd_broker(args: argparse.Namespace) -> int:
    from lily_dagster.lib.broker import ensure_topics, start_broker

    settings = load_settings(check_keys=False)  # reads no tenant data
    storage = broker_storage(args)
    proc = start_broker(args.port, storage=storage)
    try:
        ensure_topics(f"127.0.0.1:{args.port}", settings.kafka_topics)
    except BrokerError as exc:
        hint = " (does the bucket exist?)" if storage.startswith("s3://") else ""
        raise CliError(f"{exc}{hint}") from None
    print(
        f"Kafka-compatible broker (Tansu) on 127.0.0.1:{args.port}, storage {storage}; "
        "Ctrl-C stops it",
        file=sys.stderr,
    )
    code = processes.wait(proc)  # Tansu ended by itself (crashed, killed)
    processes.stop(proc)
    print(f"lily: the broker exited with status {code}", file=sys.stderr)
    return code if code >= 0 else 128 - code  # killed by a signal: 128 + it, as a shell says
