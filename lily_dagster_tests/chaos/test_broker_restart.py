"""A broker that loses its log (the embedded broker keeps it in memory) restarted under the
Kafka sensor: the loss is shown on the tick, recorded, reported by `lily run`, and the
sensor goes on from the partitions' new start, so events produced after the restart reach
the hub. And the quarantine keeps what it was given: the event_id an invalid payload names,
and one entry per message."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, RunRequest, SensorResult, SkipReason, instance_for_test

from lily_dagster import runtime
from lily_dagster.cli.run import cmd_run
from lily_dagster.defs.ingest.sensors import OFFSET_RESET_TAG, kafka_events_sensor
from lily_dagster.lib.broker import ensure_topics, free_port, produce, start_broker
from lily_dagster.lib.hub.local import LocalHub
from lily_dagster.lib.kafka_source import offset_resets_path, parse_cursor, read_offset_resets
from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster.settings import UNROUTED_TENANT, Settings
from lily_dagster_tests import sensor_harness as harness
from lily_dagster_tests.support.envelopes import table_messages
from lily_dagster_tests.support.sealed import ciphers_at

TOPIC = "lily.chaos.events"


class Broker:
    """The embedded broker on a fixed port, which a test can crash and start again."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_broker(self.port, self.log)
        # one partition: offsets, and so the cursor, are predictable
        ensure_topics(self.bootstrap, [TOPIC], partitions=1)

    def crash(self) -> None:
        """kill -9: the in-memory log is gone."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        self.crash()
        deadline = time.monotonic() + 10
        while True:  # the port may take a moment to be free again
            try:
                self.start()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


@pytest.fixture
def broker(lily_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    broker = Broker(tmp_path / "tansu.log")
    broker.start()
    monkeypatch.setenv("LILY_KAFKA_BOOTSTRAP", broker.bootstrap)
    monkeypatch.setenv("LILY_KAFKA_TOPICS", TOPIC)
    yield broker
    broker.crash()


def hub_names(home: Path, tenant: str = "acme") -> set[str]:
    return {r["name"] for r in LocalHub(home / "hub", ciphers=ciphers_at(home)).export(tenant)}


def tick(instance: DagsterInstance, cursor: str | None) -> SensorResult | SkipReason:
    return harness.tick(kafka_events_sensor, instance, cursor)


def drain(instance: DagsterInstance, cursor: str | None) -> tuple[str | None, list[RunRequest]]:
    return harness.drain(kafka_events_sensor, instance, cursor)


def resets(home: Path) -> list[dict[str, Any]]:
    return read_offset_resets(offset_resets_path(home))


def test_events_produced_after_a_restart_reach_the_hub_and_the_loss_is_reported(
    broker: Broker, lily_home: Path
) -> None:
    keys = ("topic", "partition", "kind", "cursor", "low", "end")
    with instance_for_test() as instance:
        produce(broker.bootstrap, TOPIC, table_messages("acme", ["A1", "A2", "A3"]))
        cursor, _ = drain(instance, None)
        produce(broker.bootstrap, TOPIC, table_messages("acme", ["B1", "B2", "B3"]))
        cursor, _ = drain(instance, cursor)
        assert parse_cursor(cursor) == {TOPIC: {"0": 6}}
        assert hub_names(lily_home) == {"A1", "A2", "A3", "B1", "B2", "B3"}

        # Restarted after the sensor read them, and 3 events produced before its next tick:
        # its cursor (6) is beyond the new log's end (3). They sit at offsets 0-2, the very
        # range of the first batch, which the hub has applied: read and applied all the same.
        broker.restart()
        produce(broker.bootstrap, TOPIC, table_messages("acme", ["D1", "D2", "D3"]))
        first = tick(instance, cursor)
        assert isinstance(first, SensorResult) and first.run_requests
        assert all(r.tags[OFFSET_RESET_TAG] == f"{TOPIC}/0 6>0" for r in first.run_requests)
        assert parse_cursor(first.cursor) == {TOPIC: {"0": 3}}
        harness.run_requested(instance, first)
        assert {"D1", "D2", "D3"} <= hub_names(lily_home)
        (recorded,) = resets(lily_home)
        assert {k: recorded[k] for k in keys} == {
            "topic": TOPIC,
            "partition": 0,
            "kind": "past_end",
            "cursor": 6,
            "low": 0,
            "end": 3,
        }
        assert drain(instance, first.cursor)[1] == []  # nothing left, nothing reset again
        assert len(resets(lily_home)) == 1

        # Restarted again and ticked at once: the new log is empty. The tick says so, the
        # cursor goes to the new start, and what is produced next is read.
        broker.restart()
        empty = tick(instance, first.cursor)
        assert isinstance(empty, SensorResult) and not empty.run_requests
        skip = empty.skip_reason.skip_message if empty.skip_reason else ""
        assert "offsets reset" in skip and f"{TOPIC}/0: cursor 3 is beyond" in skip, skip
        assert parse_cursor(empty.cursor) == {TOPIC: {"0": 0}}
        assert [(r["cursor"], r["end"]) for r in resets(lily_home)] == [(6, 3), (3, 0)]
        produce(broker.bootstrap, TOPIC, table_messages("acme", ["E1"]))
        cursor, runs = drain(instance, empty.cursor)
        assert runs and "E1" in hub_names(lily_home)
        assert parse_cursor(cursor) == {TOPIC: {"0": 1}}
        assert len(resets(lily_home)) == 2


def test_run_summary_and_idle_probe_report_the_reset_and_exit_3(
    broker: Broker, lily_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings.from_env()
    with instance_for_test() as instance:
        started = time.monotonic()
        produce(broker.bootstrap, TOPIC, table_messages("acme", ["A1", "A2"]))
        cursor, _ = drain(instance, None)
        assert runtime.kafka_has_backlog(settings, parse_cursor(cursor)) is False
        broker.restart()
        # The probe no longer reads at a cursor past the end forever: the reset is work left
        # until the sensor has reported it, then idle holds.
        began = time.monotonic()
        assert runtime.kafka_has_backlog(settings, parse_cursor(cursor)) is True
        assert time.monotonic() - began < 8
        after = tick(instance, cursor)
        assert isinstance(after, SensorResult)
        assert runtime.kafka_has_backlog(settings, parse_cursor(after.cursor)) is False
        summary = runtime.run_summary(instance, settings, started)
        (reported,) = summary["kafka_offset_resets"]
        assert (reported["cursor"], reported["low"], reported["kind"]) == (2, 0, "past_end")
        # only those since the command started
        assert (
            runtime.run_summary(instance, settings, time.monotonic())["kafka_offset_resets"] == []
        )

    monkeypatch.setattr(runtime, "run_until_idle", lambda *a, **k: summary)
    args = argparse.Namespace(until_idle=True, timeout=5)
    assert cmd_run(args) == 3
    monkeypatch.setattr(
        runtime, "run_until_idle", lambda *a, **k: {**summary, "kafka_offset_resets": []}
    )
    assert cmd_run(args) == 0


def test_unrouted_and_malformed_messages_keep_their_event_id_and_one_entry_each(
    broker: Broker, lily_home: Path
) -> None:
    messages: list[tuple[bytes | None, bytes]] = [
        (None, json.dumps({"event_id": "e2", "tenant": "NOT VALID"}).encode()),
        (None, json.dumps({"event_id": "e2", "tenant": "NOT VALID"}).encode()),
        (None, b"null"),
        (None, b"null"),
        (None, b""),
        (None, b""),
        (None, json.dumps({"event_id": "e1", "tenant": "acme", "op": 7}).encode()),
        *table_messages("acme", ["T1"]),
    ]
    with instance_for_test() as instance:
        produce(broker.bootstrap, TOPIC, messages)
        cursor, _ = drain(instance, None)
        # The same messages read again (a tick whose cursor was lost): no new entries.
        drain(instance, None)
    store = QuarantineStore(lily_home / "quarantine", ciphers_at(lily_home))
    unrouted = [json.loads(line) for line in store.export(UNROUTED_TENANT)]
    assert sorted((r["event_id"] or "", r["reason"], r["raw"]) for r in unrouted) == [
        ("", "malformed_json", ""),
        ("", "malformed_json", ""),
        ("", "malformed_json", "null"),
        ("", "malformed_json", "null"),
        ("e2", "bad_tenant", messages[0][1].decode()),
        ("e2", "bad_tenant", messages[0][1].decode()),
    ]
    acme = [json.loads(line) for line in store.export("acme")]
    assert [(r["event_id"], r["raw"]) for r in acme] == [("e1", messages[6][1].decode())]
    assert hub_names(lily_home) == {"T1"}
    assert parse_cursor(cursor) == {TOPIC: {"0": len(messages)}}


def test_lily_run_until_idle_after_a_restart_finishes_reads_the_new_events_and_exits_3(
    broker: Broker, lily_home: Path
) -> None:
    """The real command and daemon: no longer waits forever on a cursor past the end."""
    lily = [sys.executable, "-m", "lily_dagster.cli", "run", "--until-idle", "--timeout", "120"]
    produce(broker.bootstrap, TOPIC, table_messages("acme", ["A1", "A2"]))
    first = subprocess.run(lily, capture_output=True, text=True, timeout=180)
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads(first.stdout)["kafka_offset_resets"] == []

    broker.restart()
    produce(broker.bootstrap, TOPIC, table_messages("acme", ["N1"]))
    second = subprocess.run(lily, capture_output=True, text=True, timeout=180)
    assert second.returncode == 3, second.stderr[-3000:]
    (reset,) = json.loads(second.stdout)["kafka_offset_resets"]
    assert (reset["topic"], reset["cursor"], reset["end"], reset["low"]) == (TOPIC, 2, 1, 0)
    assert hub_names(lily_home) == {"A1", "A2", "N1"}
