"""`lily trace EVENT_ID --tenant T` from outside, after a workload through Kafka and the
webhook receiver drained by `lily run --until-idle`, with LILY_LOG_FORMAT=json at DEBUG:

- a valid Kafka event: its topic/partition/offset, batch, run, the change and version it
  made, delivered to one target and dead-lettered by the other;
- a quarantined event: the gate's reason;
- a duplicate (the same message produced twice): two copies, one change;
- an event still waiting in the webhook inbox (sent after the run): received;
- an unknown event id: exit 1, one line on stderr, status unknown;
and the same trail in the pipeline's JSON log lines, keyed by event_id and run_id."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from lily_dagster_tests.contract import outside
from lily_dagster_tests.contract.outside import WebhookTarget

JWT_SECRET = "trace-hs256-secret-0123456789abcdef0123456"
TOPIC = "trace.events"
TENANT = "acme"
REFUSE_PATH = "/hooks/refuse"
ACCEPT_PATH = "/hooks/accept"


@dataclass
class Stack:
    env: dict[str, str]
    events: dict[str, dict[str, Any]]  # by role: valid, invalid, duplicate, webhook, waiting
    run_log: str  # what `lily run --until-idle`'s daemon and runs logged (logs/daemon.log)


def _config(target: WebhookTarget) -> dict[str, Any]:
    config = outside.refusing_target_config(target, [TENANT], REFUSE_PATH, "TRACE_SECRET")
    config["targets"].append(
        {**config["targets"][0], "name": "accepting", "url": target.url(ACCEPT_PATH)}
    )
    return config


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("trace")
    events = {
        "valid": outside.table_envelope(TENANT, "kafka", 1),
        "invalid": {**outside.table_envelope(TENANT, "bad", 2), "op": "explode"},
        "duplicate": outside.table_envelope(TENANT, "dup", 3),
        "webhook": outside.table_envelope(TENANT, "webhook", 4),
        "waiting": outside.table_envelope(TENANT, "late", 5),
    }
    env = {
        "LILY_JWT_HS256_SECRET": JWT_SECRET,
        "TRACE_SECRET": "trace-target",
        "LILY_LOG_FORMAT": "json",
        "LILY_LOG_LEVEL": "DEBUG",
    }
    with outside.small_stack(root, TOPIC, _config, REFUSE_PATH, **env) as small:
        kafka = [events[r] for r in ("valid", "invalid", "duplicate", "duplicate")]
        outside.produce(
            small.env["LILY_KAFKA_BOOTSTRAP"],
            TOPIC,
            [(e["event_id"].encode(), json.dumps(e).encode()) for e in kafka],
        )
        outside.post_events(small.api, small.env, TENANT, [events["webhook"]])
        run = outside.run_until_idle(small.env, 240)
        assert run.returncode == 0, run.stderr[-3000:]
        outside.post_events(
            small.api, small.env, TENANT, [events["waiting"]]
        )  # no run left to land it
        daemon_log = Path(small.env["LILY_HOME"]) / "logs" / "daemon.log"
        yield Stack(small.env, events, daemon_log.read_text(errors="replace"))


def trace(stack: Stack, event_id: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return outside.lily("trace", event_id, "--tenant", TENANT, *extra, env=stack.env)


def traced(stack: Stack, role: str) -> dict[str, Any]:
    done = trace(stack, stack.events[role]["event_id"])
    assert done.returncode == 0, done.stderr
    found = outside.strict_json(done.stdout)
    assert found["event_id"] == stack.events[role]["event_id"]
    assert isinstance(found, dict)
    return found


def test_a_valid_kafka_event_shows_offset_batch_run_version_and_deliveries(stack: Stack) -> None:
    found = traced(stack, "valid")
    assert found["status"] == "applied" and found["found"] and not found["duplicate"]
    (copy,) = found["copies"]
    kafka = copy["kafka"]
    assert (
        kafka["topic"] == TOPIC
        and copy["origin"] == f"kafka:{TOPIC}/{kafka['partition']}/{kafka['offset']}"
    )
    assert copy["state"] == "applied" and copy["source"] == "kafka"
    assert copy["batch_id"] and copy["run_id"]
    (change,) = found["changes"]
    qualified_name = stack.events["valid"]["asset"]["qualified_name"]
    assert change["qualified_name"] == qualified_name
    assert (change["change"], change["version"]) == ("created", 1)
    deliveries = {d["target"]: d for d in change["deliveries"]}
    assert deliveries["accepting"]["status"] == "delivered"
    assert deliveries["refusing"]["status"] == "dead_lettered"
    assert "400" in deliveries["refusing"]["detail"]
    (record,) = found["records"]
    assert record["version"] == 1 and record["status"] == "ACTIVE"
    # every moment in the form of the hub export's: RFC 3339, UTC, `Z`
    moments = [copy["received_at"], copy["landed_at"], change["changed_at"]]
    assert all(m.endswith("Z") and datetime.fromisoformat(m) for m in moments), moments
    assert qualified_name in {r["qualified_name"] for r in outside.hub_export(stack.env, TENANT)}


def test_a_quarantined_event_names_the_gate(stack: Stack) -> None:
    found = traced(stack, "invalid")
    assert found["status"] == "quarantined" and not found["changes"]
    (entry,) = found["quarantined"]
    assert entry["reason"] == "unknown_op" and entry["origin"].startswith(f"kafka:{TOPIC}/")
    assert found["copies"][0]["origin"] == entry["origin"]


def test_a_duplicate_shows_both_copies_and_one_change(stack: Stack) -> None:
    found = traced(stack, "duplicate")
    assert found["status"] == "applied" and found["duplicate"]
    # the same key: one partition, two offsets one after the other
    assert len({c["kafka"]["partition"] for c in found["copies"]}) == 1
    first, second = sorted(c["kafka"]["offset"] for c in found["copies"])
    assert second == first + 1
    assert len(found["changes"]) == 1 and found["changes"][0]["version"] == 1


def test_a_webhook_event_names_its_inbox_entry(stack: Stack) -> None:
    found = traced(stack, "webhook")
    assert found["status"] == "applied"
    (copy,) = found["copies"]
    assert copy["origin"].startswith("webhook:") and copy["source"] == "webhook"


def test_an_event_not_landed_yet_is_received(stack: Stack) -> None:
    found = traced(stack, "waiting")
    assert found["status"] == "received" and not found["changes"]
    assert found["copies"][0]["origin"].startswith("webhook:")


def test_an_unknown_event_exits_1_with_one_line(stack: Stack) -> None:
    done = trace(stack, "no-such-event")
    assert done.returncode == 1
    assert outside.strict_json(done.stdout)["status"] == "unknown"
    assert done.stderr.strip().count("\n") == 0 and "no-such-event" in done.stderr


def test_trace_log_gives_the_trail_as_json_lines(stack: Stack) -> None:
    done = trace(stack, stack.events["valid"]["event_id"], "--log")
    assert done.returncode == 0, done.stderr
    lines = outside.json_lines(done.stdout)
    stages = [line["stage"] for line in lines]
    assert stages[:2] == ["received", "landed"] and "applied" in stages
    assert stages.count("delivery") == 2
    for line in lines:
        assert {"time", "level", "logger", "message", "tenant", "event_id"} <= set(line)
        assert line["event_id"] == stack.events["valid"]["event_id"]


def test_the_pipeline_logs_the_same_trail_as_json(stack: Stack) -> None:
    """Runs wrote one JSON line per event and stage, keyed by event_id and run_id: the
    lines of the valid event name the run `lily trace` names."""
    found = traced(stack, "valid")
    event_id, run_id = found["event_id"], found["copies"][0]["run_id"]
    lines = [json.loads(s) for s in stack.run_log.splitlines() if s.startswith('{"time"')]
    mine = [line for line in lines if line.get("event_id") == event_id]
    assert {line["stage"] for line in mine} >= {"landed", "valid", "applied"}, lines[-20:]
    assert {line["run_id"] for line in mine if line["stage"] == "applied"} == {run_id}
    quarantined = [line for line in lines if line.get("stage") == "quarantined"]
    assert {line.get("reason") for line in quarantined} == {"unknown_op"}


def test_a_window_that_excludes_its_batch_still_finds_the_change(stack: Stack) -> None:
    """--hours reads only recent batches: the event's origin is then unknown, but the hub's
    change log still names the change it made."""
    done = trace(stack, stack.events["valid"]["event_id"], "--hours", "0.00001")
    assert done.returncode == 0, done.stderr
    found = outside.strict_json(done.stdout)
    assert found["status"] == "applied" and found["copies"] == []
    assert [c["version"] for c in found["changes"]] == [1]
