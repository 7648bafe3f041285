"""An operator's day, from the outside: a quarantine that is mostly invalid by nature is
replayed after the operator fixed what rejected part of it; the fixed part reaches the hub,
the rest stays quarantined, nothing is lost, and the command answers in one JSON line or
one `lily: error:` line. Only the `lily` commands, the environment and Kafka are used."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lily_dagster_tests.contract import outside
from lily_dagster_tests.contract.workload import stamp
from lily_dagster_tests.support.envelopes import envelope

TOPIC = "lily.operator.events"
SMALL = 2_000  # LILY_MAX_EVENT_BYTES at ingest: the long tables are `oversized`


def table(n: int, description: str, at: datetime) -> dict[str, Any]:
    return envelope(
        f"default/snowflake/1/OPS_DB/RAW/T{n}",
        event_id=f"ops-{n:03d}",
        event_time=stamp(at + timedelta(seconds=n)),
        attributes={"description": description},
    )


def workload() -> list[bytes]:
    """5 tables that pass, 3 whose description is too long for SMALL, 12 that never will."""
    at = datetime.now(UTC) - timedelta(hours=1)
    fine = [table(n, "short", at) for n in range(5)]
    long = [table(n, "x" * (2 * SMALL), at) for n in range(5, 8)]
    broken: list[bytes] = []
    for n in range(8, 11):
        event = table(n, "short", at)
        broken.append(json.dumps({**event, "op": "explode"}).encode())  # unknown_op
        broken.append(json.dumps({**event, "event_time": "yesterday"}).encode())
        broken.append(json.dumps({**event, "asset": {"type_name": "Table"}}).encode())
        # NaN is not JSON: malformed_json, though the tenant can still be read from it
        broken.append(json.dumps(event).replace('"short"', "NaN").encode())
    return [json.dumps(e).encode() for e in fine + long] + broken


@pytest.fixture(scope="module")
def operator_env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("operator")
    port = outside.free_port()
    env = outside.clean_environment(
        LILY_HOME=str(root / "home"),
        LILY_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}",
        LILY_KAFKA_TOPICS=TOPIC,
        LILY_MAX_EVENT_BYTES=str(SMALL),
    )
    broker = outside.start_broker(port, env, root / "broker.log")
    try:
        outside.produce(f"127.0.0.1:{port}", TOPIC, [(None, v) for v in workload()])
        idle = outside.run_until_idle(env)
        assert idle.returncode == 0, idle.stderr[-3000:]
        yield env
    finally:
        outside.stop(broker)


def test_a_mostly_invalid_quarantine_replays_its_fixed_part_and_keeps_the_rest(
    operator_env: dict[str, str],
) -> None:
    assert sorted(r["name"] for r in outside.hub_export(operator_env, "acme")) == [
        f"T{n}" for n in range(5)
    ]
    before = outside.quarantine_export(operator_env, "acme")
    assert len(before) == 15
    # The operator raises the size limit. 12 of the 15 replayed still fail: far past the
    # share that blocks a batch of Kafka events, which must not block a replay.
    fixed = {**operator_env, "LILY_MAX_EVENT_BYTES": str(10 * SMALL), "LILY_BLOCK_MIN_EVENTS": "5"}
    proc = outside.lily("quarantine", "replay", "--tenant", "acme", env=fixed, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = proc.stdout.strip().splitlines()
    summary = json.loads(line)
    assert summary["success"] is True and summary["still_quarantined"] == 12
    assert "Traceback" not in proc.stderr
    assert sorted(r["name"] for r in outside.hub_export(fixed, "acme")) == [
        f"T{n}" for n in range(8)
    ]
    after = outside.quarantine_export(fixed, "acme")
    assert sorted(r["raw"] or r.get("raw_base64") for r in after) == sorted(
        r["raw"] or r.get("raw_base64") for r in before if r["reason"] != "oversized"
    )


def test_an_unknown_reason_or_tenant_is_refused_in_one_line(
    operator_env: dict[str, str], tmp_path: Path
) -> None:
    for args in (
        ("quarantine", "replay", "--tenant", "acme", "--reason", "no_such_reason"),
        ("hub", "export", "--tenant", "nobody"),
    ):
        proc = outside.lily(*args, env=operator_env)
        assert proc.returncode != 0, args
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("lily: error:"), line
    # The home the command looked in is named, so a wrong working directory is obvious.
    elsewhere = {k: v for k, v in operator_env.items() if k != "LILY_HOME"}
    proc = outside.lily("hub", "export", "--tenant", "acme", env=elsewhere, cwd=tmp_path)
    assert proc.returncode != 0 and proc.stdout == ""
    assert str(tmp_path / ".lily") in proc.stderr, proc.stderr


def test_every_batch_is_applied_and_none_is_left_claimed(operator_env: dict[str, str]) -> None:
    batches = outside.json_lines(
        outside.lily_ok("batches", "list", "--tenant", "acme", env=operator_env)
    )
    assert batches == []
