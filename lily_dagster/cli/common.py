"""What the `lily` commands share: the one-line usage error, the argument types, the
settings (and the guard of a command that reads a tenant's state), one-line output and
errors, and serving an ASGI app in the foreground."""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
from collections.abc import Iterable
from typing import Any, NoReturn, TypeAlias

from lily_dagster.lib import processes
from lily_dagster.settings import UNROUTED_TENANT, ConfigError, Settings, validate_tenant

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class CliError(RuntimeError):
    pass


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the contract's rule for every command)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"lily: error: {message} (see `{self.prog} --help`)\n")


def command_group(sub: Subparsers, name: str, text: str, dest: str) -> Subparsers:
    """A command made of sub-commands (`lily hub export`): the sub-commands' parsers."""
    return sub.add_parser(name, help=text).add_subparsers(dest=dest, required=True)


def tenant_arg(value: str) -> str:
    if value == UNROUTED_TENANT:
        return value
    try:
        return validate_tenant(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def port_arg(value: str) -> int:
    """A TCP port to listen on: 1-65535 (the socket layer's own error for more is a
    traceback, and 0 would listen where nobody knows)."""
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {value!r}: must be 1-65535")
    return port


def reason_arg(value: str) -> str:
    from lily_dagster.lib.reasons import Reason

    known = [reason.value for reason in Reason]
    if value not in known:
        raise argparse.ArgumentTypeError(
            f"unknown reason code {value!r}; the reason codes are: {', '.join(known)}"
        )
    return value


def print_json(value: Any, *, pretty: bool = False) -> None:
    """One JSON document on stdout: one line, or indented with sorted keys (`pretty`)."""
    print(json.dumps(value, indent=2, sort_keys=True) if pretty else json.dumps(value))


def write_lines(lines: Iterable[str]) -> None:
    """Lines (JSON Lines, already encoded) on stdout, as they come."""
    for line in lines:
        sys.stdout.write(line + "\n")


def print_error(message: str) -> None:
    print(f"lily: error: {message}", file=sys.stderr)


def load_settings(check_keys: bool = True) -> Settings:
    from lily_dagster.lib.config_checks import check_plugin_config
    from lily_dagster.lib.logs import configure_logging

    # A bad LILY_CONFIG (hooks, targets, pollers) fails at start, as it would fail the
    # code location's load: a daemon without definitions would run no sensor at all.
    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)
    check_plugin_config(settings.config)
    if check_keys:
        check_data_keys(settings)
    return settings


def check_data_keys(settings: Settings) -> None:
    """A wrong or missing LILY_MASTER_KEY (or LILY_KMS) for the data keys under
    $LILY_HOME/keys fails the command before it reads or writes anything, in one line; so
    does a key service that does not answer."""
    from lily_dagster.lib.crypto import KmsUnavailableError, keyring

    try:
        keyring(settings).check()
    except KmsUnavailableError as exc:
        raise CliError(f"key service unavailable: {exc}") from None


# Folders of a LILY_HOME that hold Lily's state; a home with none of them holds nothing.
STATE_DIRS = ("dagster", "staging", "quarantine", "hub", "atlan-ledger")


def known_tenants(settings: Settings) -> set[str]:
    """The tenants a LILY_HOME knows: configured in LILY_CONFIG, or with a hub, staging or
    quarantine of their own. Every tenant a source delivered for has its staging folder
    (landed before the sensor adds its Dagster partition), so Dagster's storage, slower to
    open, need not be asked."""
    names = {t.name for t in settings.config.tenants}
    for folder in (settings.staging_dir, settings.quarantine_dir):
        if folder.is_dir():
            names |= {d.name for d in folder.iterdir() if d.is_dir() and d.name[0] != "."}
    for folder in (settings.hub_dir, settings.home / "atlan-ledger"):
        if folder.is_dir():
            names |= {f.stem for f in folder.glob("*.duckdb")}
    return names


def state_settings(tenant: str) -> Settings:
    """Settings of a command that reads a tenant's state. A LILY_HOME that holds no Lily
    state (a command run from another folder: the default is ./.lily), or nothing of the
    tenant (a typo), is refused with one line naming the absolute LILY_HOME looked in,
    rather than answering as if the tenant had nothing."""
    settings = load_settings()
    home = settings.home
    if not any((home / name).is_dir() for name in STATE_DIRS):
        raise CliError(
            f"no Lily state in LILY_HOME={home} (none of {', '.join(STATE_DIRS)}); run "
            "from your stack's folder or set LILY_HOME to its state directory"
        )
    known = known_tenants(settings)
    if tenant != UNROUTED_TENANT and tenant not in known:
        listed = ", ".join(sorted(known)[:10]) + (", ..." if len(known) > 10 else "")
        raise CliError(
            f"unknown tenant {tenant!r} in LILY_HOME={home}: no hub, staging or quarantine "
            f"of it, and not in LILY_CONFIG (known: {listed or 'none'})"
        )
    return settings


def serve(app: Any, host: str, port: int, grace_s: int, banner: str) -> int:
    """Serve an ASGI app in the foreground until a stop signal. uvicorn shuts down
    gracefully on SIGTERM and SIGINT (then re-raises the signal: `SignalExit`); SIGHUP gets
    the same graceful shutdown here. `banner` goes to stderr once the port is bound."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=grace_s,
        )
    )
    listening = listen(host, port)  # the banner only once it is true
    print(banner, file=sys.stderr)
    hangup: list[int] = []

    def on_hangup(signum: int, _frame: object) -> None:
        hangup.append(signum)
        server.should_exit = True

    previous = None
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread and signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
        previous = signal.signal(signal.SIGHUP, on_hangup)
    # The receiver's helper threads (the audit log's group commit, the inbox's) wait for the
    # GIL up to the switch interval (5 ms) while the event loop runs Python: every durable
    # answer waits for one of them.
    sys.setswitchinterval(0.0005)
    try:
        server.run(sockets=[listening])
    finally:
        listening.close()
        if previous is not None:
            signal.signal(signal.SIGHUP, previous)
    if hangup:
        raise processes.SignalExit(hangup[0])
    return 0 if server.started else 3  # uvicorn's start failure


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port, or a CliError in one line (port taken, no such
    address). Bound here rather than by uvicorn, whose failure is a log line and exit 3."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # uvicorn's default backlog
    except OSError as exc:
        sock.close()
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock
