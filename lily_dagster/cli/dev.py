"""`lily dev`: the whole local stack (what `make run` starts): the broker, the Dagster UI
and daemon, the webhook receiver and demo traffic. Their output goes to $LILY_HOME/logs/;
the terminal gets `lily dev`'s own lines."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from typing import Any

from lily_dagster.cli.broker import STORAGE_HELP, broker_storage
from lily_dagster.cli.common import Subparsers, load_settings, port_arg, print_error
from lily_dagster.cli.tokens import dev_jwt_secret, mint_token
from lily_dagster.lib import processes
from lily_dagster.settings import DEFAULT_WEBHOOK_PORT, EMBEDDED_BROKER_PORT, Settings

# The log of each process of `lily dev`, under $LILY_HOME/logs/.
DEV_LOGS = {"dagster dev": "dagster.log", "the webhook receiver": "webhook.log"}


def register(sub: Subparsers) -> None:
    dev = sub.add_parser("dev", help="the whole local stack (what `make run` starts)")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=port_arg, default=3000)
    dev.add_argument("--webhook-port", type=port_arg, default=DEFAULT_WEBHOOK_PORT)
    dev.add_argument(
        "--broker-port",
        type=port_arg,
        default=EMBEDDED_BROKER_PORT,
        help=f"the embedded broker's port (default {EMBEDDED_BROKER_PORT}; "
        "unused when LILY_KAFKA_BOOTSTRAP is set)",
    )
    dev.add_argument("--storage", help=STORAGE_HELP)
    dev.add_argument(
        "--stop-with-parent",
        action="store_true",
        help="stop, as on SIGHUP, when the process that started it exits (`make run`)",
    )
    dev.add_argument("--no-demo", action="store_true", help="no demo traffic")
    dev.add_argument("--demo-every", type=float, default=15, help="seconds between demo bursts")
    dev.set_defaults(func=cmd_dev)


def _demo_trickle(
    settings: Settings, stop: threading.Event, every_s: float, webhook_url: str
) -> None:
    """Demo traffic every `every_s`: a burst on Kafka and a batch through the webhook receiver."""
    import httpx

    from lily_dagster.lib.broker import produce
    from lily_dagster.lib.demo import generate_demo

    seed = 1
    while not stop.wait(every_s):
        seed += 1
        traffic = generate_demo(
            tables_per_tenant=2, columns_per_table=2, seed=seed, start=None, oversized_bytes=0
        )
        posted = [e for e in traffic.valid if e["tenant"] == "globex"][:20]
        try:
            produce(settings.kafka_bootstrap, settings.kafka_topics[0], traffic.messages)
            httpx.post(
                f"{webhook_url}/v1/tenants/globex/events",
                json=posted,
                headers={"authorization": f"Bearer {mint_token(['globex'], 3600)}"},
                timeout=10,
            )
        except Exception as exc:  # the demo feed is best effort; the stack keeps running
            print(f"demo traffic: {exc}", file=sys.stderr)


def _dev_broker(
    settings: Settings, port: int, storage: str, procs: list[subprocess.Popen[bytes]]
) -> Settings:
    """`lily dev`'s broker: the one LILY_KAFKA_BOOTSTRAP names, the one already on `port`,
    or an embedded one started there (added to `procs`)."""
    from lily_dagster.lib.broker import ensure_topics, is_durable, port_open, start_broker
    from lily_dagster.runtime import KAFKA_SENSOR, reset_sensor_cursor

    if not settings.external_kafka:
        settings = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{port}"})
        if port_open("127.0.0.1", port):
            print(f"using the broker already on {settings.kafka_bootstrap}", file=sys.stderr)
        else:
            procs.append(start_broker(port, settings.logs_dir / "broker.log", storage=storage))
            if not is_durable(storage):
                # A broker that keeps its log in memory starts at offset 0: offsets saved
                # against the previous one must not skip its messages.
                reset_sensor_cursor(settings, KAFKA_SENSOR)
    ensure_topics(settings.kafka_bootstrap, settings.kafka_topics)
    return settings


def _spawn_logged(
    command: list[str], settings: Settings, log_name: str, pidfile: Any = None
) -> subprocess.Popen[bytes]:
    """A child of `lily dev` whose output goes to $LILY_HOME/logs/`log_name`."""
    from lily_dagster.runtime import child_env

    with open(settings.logs_dir / log_name, "ab") as log:
        return processes.spawn(
            command, env=child_env(settings), stdout=log, stderr=subprocess.STDOUT, pidfile=pidfile
        )


def _watch_dev(children: dict[str, subprocess.Popen[bytes]], settings: Settings) -> int:
    """Wait while every named child runs; when one exits, say which and where its log is."""
    while True:
        for name, proc in children.items():
            if proc.poll() is not None:
                print_error(
                    f"{name} exited with code {proc.returncode}; its log: "
                    f"{settings.logs_dir / DEV_LOGS[name]}"
                )
                return 1
        time.sleep(1)


def _start_demo_traffic(
    settings: Settings, stop: threading.Event, args: argparse.Namespace
) -> None:
    """The demo's first burst on Kafka, then a trickle (Kafka and webhooks) until `stop`."""
    from lily_dagster.lib.broker import produce
    from lily_dagster.lib.demo import generate_demo

    produce(settings.kafka_bootstrap, settings.kafka_topics[0], generate_demo().messages)
    threading.Thread(
        target=_demo_trickle,
        args=(settings, stop, args.demo_every, f"http://127.0.0.1:{args.webhook_port}"),
        daemon=True,
    ).start()


def cmd_dev(args: argparse.Namespace) -> int:
    """The whole local stack (make run): broker, Dagster UI and daemon, demo traffic; their
    output goes to $LILY_HOME/logs/, the terminal gets `lily dev`'s own lines."""
    from lily_dagster.runtime import (
        dagster_dev_command,
        fail_runs_of_a_stopped_stack,
        prepare_dagster_home,
    )

    settings = load_settings()
    storage = broker_storage(args)
    if args.stop_with_parent:
        processes.stop_with_parent()
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    # One daemon per LILY_HOME: refused while another `lily run`/`lily dev` runs here; one a
    # killed predecessor left is stopped first.
    pidfile = processes.DaemonPidfile(settings.home)
    pidfile.acquire("lily dev")
    procs: list[subprocess.Popen[bytes]] = []
    stop = threading.Event()
    try:
        settings = _dev_broker(settings, args.broker_port, storage, procs)
        prepare_dagster_home(settings)
        fail_runs_of_a_stopped_stack(settings)
        os.environ.setdefault("LILY_JWT_HS256_SECRET", dev_jwt_secret(settings))
        receiver = [sys.executable, "-m", "lily_dagster.cli", "webhook", "serve", "--port"]
        webhook = _spawn_logged([*receiver, str(args.webhook_port)], settings, "webhook.log")
        procs.append(webhook)
        if not args.no_demo:
            _start_demo_traffic(settings, stop, args)
        # `dagster dev` runs the daemon: its group is the one the pidfile records.
        command = dagster_dev_command(settings, args.host, args.port)
        webserver = _spawn_logged(command, settings, "dagster.log", pidfile=pidfile)
        procs.append(webserver)
        print(
            f"Dagster UI on http://{args.host}:{args.port}; Kafka on {settings.kafka_bootstrap} "
            f"(storage {storage}); webhooks on http://127.0.0.1:{args.webhook_port} (tokens: "
            f"`lily token --tenant T`); logs in {settings.logs_dir}; Ctrl-C stops it all",
            file=sys.stderr,
        )
        return _watch_dev({"dagster dev": webserver, "the webhook receiver": webhook}, settings)
    finally:
        stop.set()
        for proc in reversed(procs):
            processes.stop(proc)
        pidfile.release()
