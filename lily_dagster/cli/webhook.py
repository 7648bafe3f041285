"""`lily webhook serve` (and its plainer name `lily serve`): the receiver (HTTP) in the
foreground: webhooks in (CONTRACT.md §4), the metadata access API out (§6)."""

from __future__ import annotations

import argparse

from lily_dagster.cli.common import Subparsers, command_group, load_settings, port_arg, serve
from lily_dagster.settings import DEFAULT_WEBHOOK_PORT


def register(sub: Subparsers) -> None:
    webhook = command_group(sub, "webhook", "the webhook receiver", dest="w_command")
    _serve_arguments(webhook.add_parser("serve", help="run the webhook receiver (HTTP)"))
    _serve_arguments(
        sub.add_parser(
            "serve", help="the receiver: webhooks in, the metadata access API out (HTTP)"
        )
    )


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=port_arg, default=DEFAULT_WEBHOOK_PORT)
    parser.set_defaults(func=cmd_webhook_serve)


def cmd_webhook_serve(args: argparse.Namespace) -> int:
    from lily_dagster.api.app import create_app

    settings = load_settings()
    app = create_app(settings)  # bad auth or vendor configuration fails here, before binding
    banner = f"Lily receiver on http://{args.host}:{args.port}"
    return serve(app, args.host, args.port, grace_s=10, banner=banner)
