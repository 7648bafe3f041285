"""`atlan-emulator --port N`: the emulator in the foreground until SIGTERM or SIGINT (uvicorn's
graceful shutdown). `create` is what both this command and `lily atlan-emulator` start from."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from atlan_emulator import API_KEY_ENV, DEFAULT_API_KEY


class EmulatorError(Exception):
    """A start-up failure, said in one line: a bad flag value or an unusable --state file."""


def create(
    api_key: str | None, state: str | None, rate_limit_per_min: int | None, host: str, port: int
) -> tuple[Any, str]:
    """The app for these flags and the line that announces it. The key: `api_key`, else
    $LILY_ATLAN_EMULATOR_API_KEY, else the default."""
    import duckdb

    from atlan_emulator.app import create_app

    if rate_limit_per_min is not None and rate_limit_per_min < 1:
        raise EmulatorError("--rate-limit-per-min must be at least 1")
    if api_key:
        key_source = "--api-key"
    elif os.environ.get(API_KEY_ENV):
        api_key, key_source = os.environ[API_KEY_ENV], API_KEY_ENV
    else:
        api_key, key_source = DEFAULT_API_KEY, f"the default, {DEFAULT_API_KEY}"
    try:
        app = create_app(api_key, state, rate_limit_per_min)
    except duckdb.Error as exc:  # e.g. the --state file is locked by another emulator
        raise EmulatorError(f"cannot open --state {state}: {exc}") from None
    banner = (
        f"Atlan emulator on http://{host}:{port} (API key: {key_source}; "
        f"state: {state or 'in memory'})"
    )
    return app, banner


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atlan-emulator", description="an Atlan-compatible local server for pyatlan"
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--api-key",
        help=f"the bearer token it accepts (default: ${API_KEY_ENV}, else {DEFAULT_API_KEY})",
    )
    parser.add_argument("--state", help="DuckDB file to keep state in (default: in memory)")
    parser.add_argument(
        "--rate-limit-per-min", type=int, help="answer 429 above this many requests a minute"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    args = build_parser().parse_args(argv)
    try:
        app, banner = create(
            args.api_key, args.state, args.rate_limit_per_min, args.host, args.port
        )
    except EmulatorError as exc:
        print(f"atlan-emulator: error: {exc}", file=sys.stderr)
        return 2
    print(banner, file=sys.stderr)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
        )
    )
    server.run()
    return 0 if server.started else 3  # uvicorn's start failure (e.g. the port is taken)


if __name__ == "__main__":
    sys.exit(main())
