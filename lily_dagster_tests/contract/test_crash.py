"""Crash safety as a user meets it: `kill -9` of `lily run --until-idle` mid-run, twice, then
a fresh `lily run --until-idle` — the hub holds exactly what CONTRACT §1 says (nothing lost,
nothing applied twice), every invalid event is in its tenant's quarantine, and no process
the killed commands started is left running. Only the `lily` commands, the environment,
Kafka and /proc (what `ps` shows) are used."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lily_dagster_tests.contract import outside
from lily_dagster_tests.contract.workload import encode, expected_state, stamp
from lily_dagster_tests.support import envelopes

TENANTS = ("acme", "globex", "initech")
TOPIC = "lily.crash.events"


def envelope(
    tenant: str, n: int, op: str, qn: str, type_name: str, start: datetime
) -> dict[str, Any]:
    at = stamp(start + timedelta(seconds=n))
    return envelopes.envelope(
        qn,
        event_id=f"{at}-{tenant}-{n:05d}",
        tenant=tenant,
        op=op,
        event_time=at,
        type_name=type_name,
        attributes={"description": f"v{n}", "parent_qualified_name": qn.rsplit("/", 1)[0]},
    )


def workload() -> tuple[list[dict[str, Any]], list[bytes]]:
    """Per tenant 30 tables of 4 columns, then updates, deletes and restores (some deletes
    never restored); plus invalid payloads: NaN, bytes that are not UTF-8, a missing field."""
    start = datetime.now(UTC) - timedelta(hours=2)
    events: list[dict[str, Any]] = []
    for tenant in TENANTS:
        n = 0
        for t in range(30):
            table = f"default/snowflake/1/{tenant.upper()}_DB/RAW/T{t}"
            assets = [(table, "Table")] + [(f"{table}/C{c}", "Column") for c in range(4)]
            for qn, type_name in assets:
                n += 1
                events.append(
                    envelope(tenant, n, "upsert", qn, type_name, start + timedelta(seconds=n))
                )
            if t % 3 == 0:
                n += 1
                events.append(
                    envelope(tenant, n, "delete", table, "Table", start + timedelta(seconds=n))
                )
            if t % 6 == 0:
                n += 1
                events.append(
                    envelope(tenant, n, "upsert", table, "Table", start + timedelta(seconds=n))
                )
    invalid = [
        b'{"event_id": "nan-1", "tenant": "acme", "op": "upsert", "event_time": NaN}',
        b"\xff\xfe not utf-8 \x80",
        json.dumps({k: v for k, v in events[0].items() if k != "asset"}).encode(),
    ]
    return events, invalid  # fmt: skip


def processes_of(home: Path) -> list[int]:
    """Live processes whose environment names this LILY_HOME (as `ps e` shows them)."""
    marker = f"LILY_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if stat[0] in "ZX":
                continue
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


def kill_9_after(seconds: float, env: dict[str, str], log: Path) -> None:
    """`lily run --until-idle` killed with SIGKILL `seconds` after it started (the lily
    process alone, as `kill -9 PID` does)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(outside.LILY), "run", "--until-idle", "--timeout", "240"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    time.sleep(seconds)
    assert proc.poll() is None, f"`lily run` ended before the kill:\n{log.read_text()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def test_kill_9_twice_mid_run_then_a_fresh_run_gives_the_contracts_hub(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = outside.free_port()
    env = outside.clean_environment(
        LILY_HOME=str(home),
        LILY_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}",
        LILY_KAFKA_TOPICS=TOPIC,
    )
    # The broker lives through the test: a LILY_HOME of its own, so it is not counted below.
    broker_env = {**env, "LILY_HOME": str(tmp_path / "broker-home")}
    broker = outside.start_broker(port, broker_env, tmp_path / "broker.log")
    try:
        events, invalid = workload()
        messages = [(e["asset"]["qualified_name"].encode(), encode(e)) for e in events]
        outside.produce(env["LILY_KAFKA_BOOTSTRAP"], TOPIC, messages + [(None, b) for b in invalid])
        kill_9_after(9, env, tmp_path / "run1.log")  # typically as the first run starts
        kill_9_after(3, env, tmp_path / "run2.log")  # while it stops what the first left
        final = outside.run_until_idle(env)
        assert final.returncode in (0, 1), final.stderr[-3000:]  # 1: the killed runs failed
        left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:200] for pid in processes_of(home)}
        assert not left, f"processes of the killed commands still run: {left}"
        for tenant in TENANTS:
            assert final.summary()["tenants"][tenant]["pending_batches"] == 0
            hub = {r["qualified_name"]: r for r in outside.hub_export(env, tenant)}
            want = expected_state(events, tenant)
            assert set(hub) == set(want), tenant
            for qn, record in want.items():
                got = hub[qn]
                assert (got["status"], got["event_id"]) == (record["status"], record["event_id"]), (
                    qn
                )
        quarantined = [
            row for t in (*TENANTS, "_unrouted") for row in outside.quarantine_export(env, t)
        ]
        # Each payload's exact bytes: raw_base64 beside a raw that is not text.
        kept = {row.get("raw_base64") or outside.b64(row["raw"].encode()) for row in quarantined}
        missing = [raw for raw in invalid if outside.b64(raw) not in kept]
        assert not missing, f"not in any quarantine: {missing}"
    finally:
        outside.stop(broker)
        for pid in processes_of(home):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
