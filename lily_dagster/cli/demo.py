"""`lily demo`: the headless demo, a broker and multi-tenant traffic processed to completion,
checked against what the contract says the hub and quarantine must hold."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable
from typing import Any

from lily_dagster.cli.common import CliError, Subparsers, load_settings, print_json
from lily_dagster.lib import processes
from lily_dagster.settings import Settings


def register(sub: Subparsers) -> None:
    demo = sub.add_parser(
        "demo", help="headless demo: broker, multi-tenant traffic, processed to completion"
    )
    demo.add_argument("--tables", type=int, default=6, help="tables per tenant (default 6)")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument(
        "--timeout", type=float, default=600, help="seconds before giving up (default 600)"
    )
    demo.set_defaults(func=cmd_demo)


def _with_embedded_broker(settings: Settings) -> tuple[Settings, Callable[[], None]]:
    """Start Tansu on a free port unless LILY_KAFKA_BOOTSTRAP names a broker."""
    from lily_dagster.lib.broker import free_port, start_broker, storage_from_env

    if settings.external_kafka:
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
    quarantine = QuarantineStore.from_settings(settings)
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

    base = load_settings()
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
    print_json(
        {
            "ok": ok,
            "lily_home": str(home),
            "seconds": summary["seconds"],
            "runs": summary["runs"],
            "tenants": report,
        },
        pretty=True,
    )
    if not ok:
        print(
            "lily demo: hub or quarantine differs from the contract's expectation", file=sys.stderr
        )
    return 0 if ok else 1
