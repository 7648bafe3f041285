"""The `lily` console script (CONTRACT.md §2). Errors print one line and exit non-zero."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

from lily_dagster.lib import processes
from lily_dagster.lib.broker import BrokerError
from lily_dagster.settings import (
    DEFAULT_WEBHOOK_PORT,
    EMBEDDED_BROKER_PORT,
    UNROUTED_TENANT,
    ConfigError,
    Settings,
    validate_tenant,
)


class CliError(RuntimeError):
    pass


class _OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the contract's rule for every command)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"lily: error: {message} (see `{self.prog} --help`)\n")


def _tenant_arg(value: str) -> str:
    if value == UNROUTED_TENANT:
        return value
    try:
        return validate_tenant(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _reason_arg(value: str) -> str:
    from lily_dagster.lib.reasons import Reason

    known = [reason.value for reason in Reason]
    if value not in known:
        raise argparse.ArgumentTypeError(
            f"unknown reason code {value!r}; the reason codes are: {', '.join(known)}"
        )
    return value


def _settings() -> Settings:
    from lily_dagster.lib.hooks import check_hook_config
    from lily_dagster.lib.propagation import check_target_config

    # A bad LILY_CONFIG (hooks and targets included) fails at start, as it would fail the
    # code location's load: a daemon without definitions would run no sensor at all.
    settings = Settings.from_env()
    check_hook_config(settings.config)
    check_target_config(settings.config)
    return settings


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


def _state_settings(tenant: str) -> Settings:
    """Settings of a command that reads a tenant's state. A LILY_HOME that holds no Lily
    state (a command run from another folder: the default is ./.lily), or nothing of the
    tenant (a typo), is refused with one line naming the absolute LILY_HOME looked in,
    rather than answering as if the tenant had nothing."""
    settings = _settings()
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


def cmd_hub_export(args: argparse.Namespace) -> int:
    from lily_dagster.lib.hub import open_hub
    from lily_dagster.lib.strict_json import dumps

    settings = _state_settings(args.tenant)
    hub = open_hub(settings)
    out = sys.stdout
    for record in hub.export(args.tenant):
        out.write(dumps(record, ensure_ascii=False) + "\n")  # RFC 8259: no NaN
    return 0


def cmd_quarantine_export(args: argparse.Namespace) -> int:
    from lily_dagster.lib.quarantine import QuarantineStore

    settings = _state_settings(args.tenant)
    for line in QuarantineStore(settings.quarantine_dir).export(args.tenant):
        sys.stdout.write(line + "\n")
    return 0


def _target(settings: Settings, tenant: str, name: str) -> Any:
    from lily_dagster.lib.propagation import configure_target

    return configure_target(settings.config, tenant, name)


def cmd_dlq_list(args: argparse.Namespace) -> int:
    from lily_dagster.lib.quarantine import QuarantineStore

    settings = _state_settings(args.tenant)
    _target(settings, args.tenant, args.target)
    for line in QuarantineStore(settings.dlq_dir / args.target).export(args.tenant):
        sys.stdout.write(line + "\n")
    return 0


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    from lily_dagster.lib.hub import open_hub
    from lily_dagster.lib.propagation import Propagator
    from lily_dagster.lib.quarantine import QuarantineStore

    settings = _state_settings(args.tenant)
    target = _target(settings, args.tenant, args.target)
    propagator = Propagator(open_hub(settings), settings.propagation_dir, settings.dlq_dir)
    result = propagator.replay_dlq(args.tenant, target)
    left = QuarantineStore(settings.dlq_dir / args.target).read(args.tenant).height
    print(
        json.dumps(
            {
                "tenant": args.tenant,
                "target": args.target,
                "delivered": result.delivered,
                "dead_lettered_again": result.dead_lettered,
                "withheld_by_access_rules": result.withheld,
                "still_dead_lettered": left,
                "error": result.error,
            }
        )
    )
    return 1 if result.error else 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from lily_dagster.lib.backfill import BackfillReport, run_backfill
    from lily_dagster.lib.hub import open_hub
    from lily_dagster.lib.quarantine import QuarantineStore

    settings = _settings()
    interactive = sys.stderr.isatty()

    def progress(r: BackfillReport) -> None:
        # One status line, rewritten in place on a terminal; a log line per batch otherwise.
        line = (
            f"{args.tenant} shard {r.shard}/{r.shards}: batch {r.batches}, "
            f"{r.rows_read:,} rows read, {r.applied:,} applied, {r.quarantined:,} quarantined, "
            f"{r.rows_per_s:,.0f} rows/s"
        )
        print(f"\r{line}" if interactive else line, end="" if interactive else "\n",
              file=sys.stderr, flush=True)  # fmt: skip

    report = run_backfill(
        open_hub(settings),
        QuarantineStore(settings.quarantine_dir),
        settings.config,
        args.tenant,
        args.source,
        shards=args.shards,
        shard=args.shard,
        batch_rows=args.batch_rows,
        max_event_bytes=settings.max_event_bytes,
        progress=progress,
    )
    if interactive:
        print(file=sys.stderr)
    if report.shards_left:
        print(
            f"{args.tenant}: not whole yet, shards still to run: {report.shards_left} "
            f"(of --shards {report.shards})",
            file=sys.stderr,
        )
    print(json.dumps(report.as_dict()))
    return 0


def cmd_bench_backfill(args: argparse.Namespace) -> int:
    from lily_dagster.bench.backfill import run as run_bench

    if min(args.assets) < 1:
        raise CliError("--assets must be at least 1")
    print(json.dumps(run_bench(args.assets, batch_rows=args.batch_rows)))
    return 0


def cmd_bench_latency(args: argparse.Namespace) -> int:
    from lily_dagster.bench.latency import run_latency

    if args.rate <= 0 or args.seconds <= 0:
        raise CliError("--rate and --seconds must be positive")
    print(json.dumps(run_latency(args.rate, args.seconds, tenants=args.tenants)))
    return 0


def cmd_quarantine_replay(args: argparse.Namespace) -> int:
    if args.tenant == UNROUTED_TENANT:
        raise CliError(
            "_unrouted events name no valid tenant: fix the producer and send them again"
        )
    settings = _state_settings(args.tenant)
    before = lily_quarantine_count(settings, args.tenant, args.reason)
    result = _replay_in_process(settings, args.tenant, args.reason or [])
    after = lily_quarantine_count(settings, args.tenant, args.reason)
    print(
        json.dumps(
            {
                "tenant": args.tenant,
                "reasons": args.reason or "all",
                "replayed": before,
                "still_quarantined": after,
                "run_id": result.run_id,
                "success": result.success,
            }
        )
    )
    if result.success:
        return 0
    print(
        f"lily: error: {describe_failed_run(result)} (Dagster's log of the run: the UI, or "
        f"{settings.logs_dir / REPLAY_LOG})",
        file=sys.stderr,
    )
    return 1


REPLAY_LOG = "replay.log"


def _replay_in_process(settings: Settings, tenant: str, reasons: list[str]) -> Any:
    """Run the tenant's quarantine_replay_job in this process. What Dagster prints meanwhile
    (a line per event, a failed step's traceback, warnings) goes to $LILY_HOME/logs/, not
    the terminal: the run and its whole log are in the instance, hence in the UI too."""
    from dagster import DagsterInstance

    from lily_dagster.defs.partitions import TENANTS
    from lily_dagster.runtime import prepare_dagster_home

    prepare_dagster_home(settings)
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    with (
        open(settings.logs_dir / REPLAY_LOG, "a") as log,
        contextlib.redirect_stderr(log),
        contextlib.redirect_stdout(log),
    ):
        from lily_dagster.definitions import defs

        with DagsterInstance.get() as instance:
            if not instance.has_dynamic_partition(TENANTS, tenant):
                instance.add_dynamic_partitions(TENANTS, [tenant])
            config = {"replay": True, "replay_reasons": reasons}
            return defs.resolve_job_def("quarantine_replay_job").execute_in_process(
                run_config={"ops": {"landed_events": {"config": config}}},
                partition_key=tenant,
                instance=instance,
                tags={"lily/tenant": tenant, "lily/source": "replay"},
                raise_on_error=False,
            )


# Dagster's wrappers around the error a step raised: the one an operator needs is inside.
_WRAPPER_ERRORS = {"RetryRequested", "DagsterExecutionStepExecutionError"}


def _error_line(error: Any) -> str:
    """The first line of the innermost-but-useful error of a step failure's chain."""
    chain = []
    while error is not None:
        chain.append(error)
        error = error.cause
    useful = next((e for e in chain if e.cls_name not in _WRAPPER_ERRORS), chain[0])
    lines = [line.strip() for line in useful.message.splitlines() if line.strip()]
    if not lines:
        return useful.cls_name or "unknown error"
    return re.sub(r"^[\w.]+\.(\w+): ", r"\1: ", lines[0])  # the class without its module


def describe_failed_run(result: Any) -> str:
    """One line: the run id, each failed step with its error, the failed blocking checks."""
    from dagster import AssetCheckSeverity

    parts = [
        f"step {event.step_key} failed: {_error_line(event.step_failure_data.error)}"
        for event in result.get_step_failure_events()
    ]
    checks = [
        f"{e.asset_key.to_user_string()}.{e.check_name}"
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.severity == AssetCheckSeverity.ERROR
    ]
    if checks:
        parts.append(f"checks failed: {', '.join(checks)}")
    return f"run {result.run_id} failed: " + ("; ".join(parts) or "before any step")


def lily_quarantine_count(settings: Settings, tenant: str, reasons: list[str] | None) -> int:
    from lily_dagster.lib.quarantine import QuarantineStore

    return QuarantineStore(settings.quarantine_dir).read(tenant, reasons or None).height


@contextlib.contextmanager
def _dagster_instance(settings: Settings) -> Iterator[Any]:
    """The Dagster instance under $LILY_HOME/dagster, or None where no Lily command ever
    made one (then no run can hold a batch there)."""
    if not (settings.dagster_home / "dagster.yaml").is_file():
        yield None
        return
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        yield instance


def cmd_batches_list(args: argparse.Namespace) -> int:
    from lily_dagster.lib.staging import StagingArea, list_batches

    settings = _state_settings(args.tenant)
    batches = list_batches(StagingArea(settings.staging_dir), args.tenant)
    held = any(b.run_id for b in batches)
    with _dagster_instance(settings) if held else contextlib.nullcontext() as instance:
        for batch in batches:
            line = batch.as_dict()
            if instance is not None and batch.run_id:
                run = instance.get_run_by_id(batch.run_id)
                line["run_status"] = run.status.value if run is not None else None
            print(json.dumps(line))
    return 0


def _act_on_batch(settings: Settings, action: Callable[[Any], dict[str, Any]]) -> int:
    """Release or discard a pending batch (`action`, given whether a run is in flight, as
    the Dagster instance says); prints its one-line JSON result."""
    from lily_dagster.defs.ingest.recovery import run_in_flight
    from lily_dagster.lib.staging import BatchError

    with _dagster_instance(settings) as instance:
        in_flight = None if instance is None else lambda run_id: run_in_flight(instance, run_id)
        try:
            result = action(in_flight)
        except BatchError as exc:
            raise CliError(str(exc)) from None
    print(json.dumps(result))
    return 0


def cmd_batches_release(args: argparse.Namespace) -> int:
    from lily_dagster.lib.staging import StagingArea, release_batch

    settings = _state_settings(args.tenant)
    staging = StagingArea(settings.staging_dir)
    return _act_on_batch(
        settings, lambda in_flight: release_batch(staging, args.tenant, args.batch, in_flight)
    )


def cmd_batches_discard(args: argparse.Namespace) -> int:
    from lily_dagster.lib.quarantine import QuarantineStore
    from lily_dagster.lib.staging import StagingArea, discard_batch

    settings = _state_settings(args.tenant)
    staging = StagingArea(settings.staging_dir)
    quarantine = QuarantineStore(settings.quarantine_dir)
    return _act_on_batch(
        settings,
        lambda in_flight: discard_batch(staging, quarantine, args.tenant, args.batch, in_flight),
    )


def _broker_storage(args: argparse.Namespace) -> str:
    """--storage, else LILY_BROKER_STORAGE, else in memory; checked."""
    from lily_dagster.lib.broker import check_storage, storage_from_env

    if getattr(args, "storage", None):
        return check_storage(args.storage, "--storage")
    return storage_from_env()


def cmd_broker(args: argparse.Namespace) -> int:
    from lily_dagster.lib.broker import ensure_topics, start_broker

    settings = _settings()
    storage = _broker_storage(args)
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


def cmd_run(args: argparse.Namespace) -> int:
    from lily_dagster.runtime import NotIdleError, run_until_idle

    settings = _settings()
    if not args.until_idle:
        raise CliError(
            "only `lily run --until-idle` is supported; use `make run` for a long-running stack"
        )
    try:
        summary = run_until_idle(settings, timeout_s=args.timeout)
    except NotIdleError as exc:
        raise CliError(str(exc)) from None
    print(json.dumps(summary, indent=2, sort_keys=True))
    if summary.get("kafka_offset_resets"):  # Kafka events were lost (README: How events flow)
        return 3
    return 1 if summary["runs"].get("failure") else 0


def _serve(app: Any, host: str, port: int, grace_s: int) -> int:
    """Serve an ASGI app in the foreground until a stop signal. uvicorn shuts down
    gracefully on SIGTERM and SIGINT (then re-raises the signal: `SignalExit`); SIGHUP gets
    the same graceful shutdown here."""
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
    hangup: list[int] = []

    def on_hangup(signum: int, _frame: object) -> None:
        hangup.append(signum)
        server.should_exit = True

    previous = None
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread and signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
        previous = signal.signal(signal.SIGHUP, on_hangup)
    try:
        server.run()
    finally:
        if previous is not None:
            signal.signal(signal.SIGHUP, previous)
    if hangup:
        raise processes.SignalExit(hangup[0])
    return 0 if server.started else 3  # uvicorn's start failure (e.g. the port is taken)


def cmd_webhook_serve(args: argparse.Namespace) -> int:
    from lily_dagster.webhook.app import create_app

    settings = _settings()
    app = create_app(settings)  # bad auth or vendor configuration fails here, before binding
    print(f"Lily webhook receiver on http://{args.host}:{args.port}", file=sys.stderr)
    return _serve(app, args.host, args.port, grace_s=10)


def cmd_atlan_emulator(args: argparse.Namespace) -> int:
    import duckdb

    from lily_dagster.atlan_emulator import API_KEY_ENV, DEFAULT_API_KEY
    from lily_dagster.atlan_emulator.app import create_app

    if args.rate_limit_per_min is not None and args.rate_limit_per_min < 1:
        raise CliError("--rate-limit-per-min must be at least 1")
    if args.api_key:
        api_key, key_source = args.api_key, "--api-key"
    elif os.environ.get(API_KEY_ENV):
        api_key, key_source = os.environ[API_KEY_ENV], API_KEY_ENV
    else:
        api_key, key_source = DEFAULT_API_KEY, f"the default, {DEFAULT_API_KEY}"
    try:
        app = create_app(api_key, args.state, args.rate_limit_per_min)
    except duckdb.Error as exc:  # e.g. the --state file is locked by another emulator
        raise CliError(f"cannot open --state {args.state}: {exc}") from None
    print(
        f"Atlan emulator on http://{args.host}:{args.port} (API key: {key_source}; "
        f"state: {args.state or 'in memory'})",
        file=sys.stderr,
    )
    return _serve(app, args.host, args.port, grace_s=5)


def _with_embedded_broker(settings: Settings) -> tuple[Settings, Callable[[], None]]:
    """Start Tansu on a free port unless LILY_KAFKA_BOOTSTRAP names a broker."""
    from lily_dagster.lib.broker import free_port, start_broker, storage_from_env

    if os.environ.get("LILY_KAFKA_BOOTSTRAP"):
        return settings, lambda: None
    storage = storage_from_env()
    port = free_port()
    (settings.home / "logs").mkdir(parents=True, exist_ok=True)
    proc = start_broker(port, settings.home / "logs" / "broker.log", storage=storage)
    settings = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{port}"})
    os.environ["LILY_KAFKA_BOOTSTRAP"] = settings.kafka_bootstrap

    def stop() -> None:
        processes.stop(proc)

    return settings, stop


def demo_report(settings: Settings, traffic: Any) -> dict[str, Any]:
    """Compare the hub and quarantine with what the contract says they must hold."""
    from lily_dagster.lib.hub import open_hub
    from lily_dagster.lib.quarantine import QuarantineStore

    hub = open_hub(settings)
    quarantine = QuarantineStore(settings.quarantine_dir)
    expected = traffic.expected_state()
    expected_q = traffic.expected_quarantine()
    report: dict[str, Any] = {}
    for tenant in sorted(set(expected) | set(expected_q)):
        exp = expected.get(tenant, {})
        got = (
            {
                r["qualified_name"]: {k: v for k, v in r.items() if k != "updated_at"}
                for r in hub.export(tenant)
            }
            if not tenant.startswith("_")
            else {}
        )
        q = quarantine.read(tenant)
        got_q = sorted(
            zip(q.get_column("raw").to_list(), q.get_column("reason").to_list(), strict=True)
        )
        report[tenant] = {
            "events_valid": sum(1 for e in traffic.valid if e["tenant"] == tenant),
            "hub_active": sum(1 for r in got.values() if r["status"] == "ACTIVE"),
            "hub_deleted": sum(1 for r in got.values() if r["status"] == "DELETED"),
            "quarantined": len(got_q),
            "hub_matches_contract": got == exp,
            "quarantine_matches": got_q == expected_q.get(tenant, []),
        }
    return report


def cmd_demo(args: argparse.Namespace) -> int:
    from lily_dagster.lib.broker import ensure_topics, produce, storage_from_env
    from lily_dagster.lib.demo import generate_demo
    from lily_dagster.runtime import NotIdleError, run_until_idle

    base = _settings()
    storage_from_env()  # a bad LILY_BROKER_STORAGE fails before anything starts
    home = base.home / "demo"
    if home.exists():
        # A daemon a killed demo left would keep writing into the state removed here.
        pidfile = processes.DaemonPidfile(home)
        pidfile.acquire("lily demo")
        pidfile.release()
        shutil.rmtree(home)  # the demo's own scratch state, never the user's
    home.mkdir(parents=True)
    os.environ["LILY_HOME"] = str(home)
    settings = base.model_copy(update={"home": home})
    settings, stop_broker = _with_embedded_broker(settings)
    try:
        ensure_topics(settings.kafka_bootstrap, settings.kafka_topics)
        traffic = generate_demo(tables_per_tenant=args.tables, seed=args.seed)
        produce(settings.kafka_bootstrap, settings.kafka_topics[0], traffic.messages)
        print(f"produced {len(traffic.messages)} demo events; processing…", file=sys.stderr)
        summary = run_until_idle(settings, timeout_s=args.timeout, owner="lily demo")
        report = demo_report(settings, traffic)
    except NotIdleError as exc:
        raise CliError(str(exc)) from None
    finally:
        stop_broker()
    ok = all(t["hub_matches_contract"] and t["quarantine_matches"] for t in report.values())
    print(
        json.dumps(
            {
                "ok": ok,
                "lily_home": str(home),
                "seconds": summary["seconds"],
                "runs": summary["runs"],
                "tenants": report,
            },
            indent=2,
            sort_keys=True,
        )
    )
    if not ok:
        print(
            "lily demo: hub or quarantine differs from the contract's expectation", file=sys.stderr
        )
    return 0 if ok else 1


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


def dev_jwt_secret(settings: Settings) -> str:
    """The local stack's HS256 secret, made once under $LILY_HOME (development only)."""
    import secrets

    path = settings.home / "dev-jwt-secret"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def mint_token(tenants: list[str], ttl_s: int, scope: str = "lily:ingest") -> str:
    import jwt

    from lily_dagster.lib.webhooks.auth import auth_config_from_env

    # The receiver's own check: a token it would refuse to verify is not minted.
    secret = auth_config_from_env(dict(os.environ)).hs256_secret
    if not secret:
        raise CliError("LILY_JWT_HS256_SECRET is not set (make run sets one for the local stack)")
    now = int(time.time())
    claims = {
        "sub": "lily-cli",
        "scope": scope,
        "tenants": tenants,
        "aud": os.environ.get("LILY_JWT_AUDIENCE") or "lily",
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
    }
    if os.environ.get("LILY_JWT_ISSUER"):
        claims["iss"] = os.environ["LILY_JWT_ISSUER"]
    return jwt.encode(claims, secret, algorithm="HS256")


def cmd_token(args: argparse.Namespace) -> int:
    settings = _settings()
    os.environ.setdefault("LILY_JWT_HS256_SECRET", "")
    if not os.environ["LILY_JWT_HS256_SECRET"] and (settings.home / "dev-jwt-secret").exists():
        os.environ["LILY_JWT_HS256_SECRET"] = dev_jwt_secret(settings)
    print(mint_token(args.tenant, args.ttl, args.scope))
    return 0


def _dev_broker(
    settings: Settings, port: int, storage: str, procs: list[subprocess.Popen[bytes]]
) -> Settings:
    """`lily dev`'s broker: the one LILY_KAFKA_BOOTSTRAP names, the one already on `port`,
    or an embedded one started there (added to `procs`)."""
    from lily_dagster.lib.broker import ensure_topics, is_durable, port_open, start_broker
    from lily_dagster.runtime import KAFKA_SENSOR, reset_sensor_cursor

    if not os.environ.get("LILY_KAFKA_BOOTSTRAP"):
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
                print(
                    f"lily: error: {name} exited with code {proc.returncode}; its log: "
                    f"{settings.logs_dir / DEV_LOGS[name]}",
                    file=sys.stderr,
                )
                return 1
        time.sleep(1)


# The log of each process of `lily dev`, under $LILY_HOME/logs/.
DEV_LOGS = {"dagster dev": "dagster.log", "the webhook receiver": "webhook.log"}


def cmd_dev(args: argparse.Namespace) -> int:
    """The whole local stack (make run): broker, Dagster UI and daemon, demo traffic; their
    output goes to $LILY_HOME/logs/, the terminal gets `lily dev`'s own lines."""
    from lily_dagster.lib.broker import produce
    from lily_dagster.lib.demo import generate_demo
    from lily_dagster.runtime import (
        dagster_dev_command,
        fail_runs_of_a_stopped_stack,
        prepare_dagster_home,
    )

    settings = _settings()
    storage = _broker_storage(args)
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
            produce(settings.kafka_bootstrap, settings.kafka_topics[0], generate_demo().messages)
            threading.Thread(
                target=_demo_trickle,
                args=(settings, stop, args.demo_every, f"http://127.0.0.1:{args.webhook_port}"),
                daemon=True,
            ).start()
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


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrorParser(
        prog="lily", description="Lily: metadata events into Atlan, on Dagster."
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineErrorParser)

    demo = sub.add_parser(
        "demo", help="headless demo: broker, multi-tenant traffic, processed to completion"
    )
    demo.add_argument("--tables", type=int, default=6, help="tables per tenant (default 6)")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument(
        "--timeout", type=float, default=600, help="seconds before giving up (default 600)"
    )
    demo.set_defaults(func=cmd_demo)

    storage_help = (
        "Tansu's storage engine: memory://tansu/ (default: $LILY_BROKER_STORAGE, else in "
        "memory, lost when the broker stops), s3://bucket/ or postgres://user:pass@host/db"
    )
    broker = sub.add_parser("broker", help="embedded Kafka-compatible broker in the foreground")
    broker.add_argument("--port", type=int, default=EMBEDDED_BROKER_PORT)
    broker.add_argument("--storage", help=storage_help)
    broker.set_defaults(func=cmd_broker)

    run = sub.add_parser("run", help="run the Dagster daemon")
    run.add_argument(
        "--until-idle",
        action="store_true",
        help="exit once sources are drained and no run is in flight",
    )
    run.add_argument(
        "--timeout", type=float, default=1800, help="seconds before giving up (default 1800)"
    )
    run.set_defaults(func=cmd_run)

    hub = sub.add_parser("hub", help="the metadata hub").add_subparsers(
        dest="hub_command", required=True
    )
    export = hub.add_parser("export", help="a tenant's hub records as JSON Lines")
    export.add_argument("--tenant", required=True, type=_tenant_arg)
    export.set_defaults(func=cmd_hub_export)

    quarantine = sub.add_parser("quarantine", help="rejected events").add_subparsers(
        dest="q_command", required=True
    )
    q_export = quarantine.add_parser("export", help="a tenant's quarantined events as JSON Lines")
    q_export.add_argument("--tenant", required=True, type=_tenant_arg)
    q_export.set_defaults(func=cmd_quarantine_export)
    q_replay = quarantine.add_parser(
        "replay", help="send a tenant's quarantined events through every gate again"
    )
    q_replay.add_argument("--tenant", required=True, type=_tenant_arg)
    q_replay.add_argument(
        "--reason", action="append", type=_reason_arg, help="only this reason (repeatable)"
    )
    q_replay.set_defaults(func=cmd_quarantine_replay)

    batches = sub.add_parser(
        "batches", help="a tenant's pending batches (landed, not yet in the hub)"
    ).add_subparsers(dest="batches_command", required=True)
    for name, func, text in (
        ("list", cmd_batches_list, "each pending batch and its state, as JSON Lines"),
        ("release", cmd_batches_release, "drop a batch's claim: the next run takes it"),
        ("discard", cmd_batches_discard, "move a batch's events to the quarantine"),
    ):
        command = batches.add_parser(name, help=text)
        command.add_argument("--tenant", required=True, type=_tenant_arg)
        if name != "list":
            command.add_argument("--batch", required=True, help="its id (`lily batches list`)")
        command.set_defaults(func=func)

    backfill = sub.add_parser(
        "backfill", help="bulk load of envelope files into a tenant's hub (resumable)"
    )
    backfill.add_argument("--tenant", required=True, type=_tenant_arg)
    backfill.add_argument("--source", required=True, help="a file, a directory or s3://…")
    backfill.add_argument("--shards", type=int, default=1, help="how many shards in all")
    backfill.add_argument("--shard", type=int, default=0, help="which one this run loads")
    backfill.add_argument("--batch-rows", type=int, default=500_000)
    backfill.set_defaults(func=cmd_backfill)

    bench = sub.add_parser("bench", help="benchmarks; each prints one JSON object").add_subparsers(
        dest="bench_command", required=True
    )
    bench_backfill = bench.add_parser(
        "backfill", help="a synthetic estate through the backfill path, with its baselines"
    )
    bench_backfill.add_argument(
        "--assets", type=int, nargs="+", required=True, help="one estate size or several"
    )
    bench_backfill.add_argument("--batch-rows", type=int, default=500_000)
    bench_backfill.set_defaults(func=cmd_bench_backfill)
    bench_latency = bench.add_parser(
        "latency", help="produce-to-hub latency under the daemon at a fixed rate"
    )
    bench_latency.add_argument("--rate", type=float, required=True, help="events per second")
    bench_latency.add_argument("--seconds", type=float, required=True)
    bench_latency.add_argument("--tenants", type=int, default=3)
    bench_latency.set_defaults(func=cmd_bench_latency)

    dlq = sub.add_parser("dlq", help="changes a target refused").add_subparsers(
        dest="dlq_command", required=True
    )
    for name, func, text in (
        ("list", cmd_dlq_list, "a target's dead-lettered changes of a tenant as JSON Lines"),
        ("replay", cmd_dlq_replay, "send a target's dead-lettered changes of a tenant again"),
    ):
        command = dlq.add_parser(name, help=text)
        command.add_argument("--tenant", required=True, type=_tenant_arg)
        command.add_argument("--target", required=True)
        command.set_defaults(func=func)

    webhook = sub.add_parser("webhook", help="the webhook receiver").add_subparsers(
        dest="w_command", required=True
    )
    serve = webhook.add_parser("serve", help="run the webhook receiver (HTTP)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=DEFAULT_WEBHOOK_PORT)
    serve.set_defaults(func=cmd_webhook_serve)

    emulator = sub.add_parser(
        "atlan-emulator", help="an Atlan-compatible local server for pyatlan (tests, demos)"
    )
    emulator.add_argument("--port", type=int, required=True)
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument(
        "--api-key",
        help="the bearer token it accepts (default: $LILY_ATLAN_EMULATOR_API_KEY, "
        "else lily-emulator-key)",
    )
    emulator.add_argument("--state", help="DuckDB file to keep state in (default: in memory)")
    emulator.add_argument(
        "--rate-limit-per-min", type=int, help="answer 429 above this many requests a minute"
    )
    emulator.set_defaults(func=cmd_atlan_emulator)

    token = sub.add_parser("token", help="mint an HS256 bearer token (local development)")
    token.add_argument("--tenant", required=True, action="append", type=_tenant_arg)
    token.add_argument("--ttl", type=int, default=3600, help="seconds (default 3600)")
    token.add_argument("--scope", default="lily:ingest")
    token.set_defaults(func=cmd_token)

    dev = sub.add_parser("dev", help="the whole local stack (what `make run` starts)")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=3000)
    dev.add_argument("--webhook-port", type=int, default=DEFAULT_WEBHOOK_PORT)
    dev.add_argument(
        "--broker-port",
        type=int,
        default=EMBEDDED_BROKER_PORT,
        help=f"the embedded broker's port (default {EMBEDDED_BROKER_PORT}; "
        "unused when LILY_KAFKA_BOOTSTRAP is set)",
    )
    dev.add_argument("--storage", help=storage_help)
    dev.add_argument(
        "--stop-with-parent",
        action="store_true",
        help="stop, as on SIGHUP, when the process that started it exits (`make run`)",
    )
    dev.add_argument("--no-demo", action="store_true", help="no demo traffic")
    dev.add_argument("--demo-every", type=float, default=15, help="seconds between demo bursts")
    dev.set_defaults(func=cmd_dev)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # SIGTERM, SIGINT and SIGHUP stop every process the command started (each in a
        # process group of its own) and exit 128 + the signal; so does leaving by an error.
        with processes.handle_signals():
            return int(args.func(args))
    except processes.SignalExit as exc:
        print(f"lily: {exc}", file=sys.stderr)
        return exc.exit_code
    except (ConfigError, CliError, BrokerError, processes.ProcessError) as exc:
        print(f"lily: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
