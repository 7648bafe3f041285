"""alert_sensor on a real instance: a quarantine burst recorded in the pipeline metrics
posts one signed `firing` alert to a loopback webhook target, nothing while it holds, and one
`resolved` once the burst has left the window; a target that is down fails the tick, and
the alert is posted by the next one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import DagsterInstance, SensorResult, SkipReason, instance_for_test

from lily_dagster.defs.observability.alerts import alert_sensor
from lily_dagster.lib.metrics import MetricsStore
from lily_dagster.lib.metrics.updates import stages
from lily_dagster.lib.targets.builtin.webhook import SIGNATURE_HEADER, verify_signature
from lily_dagster_tests import sensor_harness as harness
from lily_dagster_tests.support.receivers import RecordingReceiver

SECRET = "alerts-secret"
WINDOW_S = 10


def configure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    config = tmp_path / "lily.yaml"
    config.write_text(
        f"targets:\n  - {{name: ops, type: webhook, url: '{url}', secret_env: OPS_SECRET}}\n"
        f"alerts: {{target: ops, quarantine_share: 0.2, window_s: {WINDOW_S}, cooldown_s: 600}}\n"
    )
    monkeypatch.setenv("LILY_CONFIG", str(config))
    monkeypatch.setenv("OPS_SECRET", SECRET)


@dataclass
class Watched:
    metrics: MetricsStore
    receiver: RecordingReceiver
    instance: DagsterInstance


@pytest.fixture
def watched(lily_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Watched]:
    """A home whose LILY_CONFIG sends alerts to a loopback webhook target."""
    with RecordingReceiver() as receiver, instance_for_test() as instance:
        configure(tmp_path, monkeypatch, receiver.url)
        yield Watched(MetricsStore.in_home(lily_home), receiver, instance)


def test_a_burst_fires_once_and_resolves_once(watched: Watched) -> None:
    metrics, receiver = watched.metrics, watched.receiver

    def tick(cursor: str | None) -> str | None:
        result = harness.tick(alert_sensor, watched.instance, cursor)
        assert isinstance(result, SensorResult)
        return result.cursor

    metrics.record(stages("acme", landed=100))
    cursor = tick(None)  # the baseline
    metrics.record(stages("acme", landed=100, quarantined=50))  # a burst: 50 of 100
    cursor = tick(cursor)
    cursor = tick(cursor)  # still over: quiet
    (fired,) = receiver.wait_for(1)
    assert verify_signature(fired.body, fired.header(SIGNATURE_HEADER), SECRET)
    alert = fired.json()["alert"]
    assert (alert["key"], alert["status"]) == ("quarantine_share:acme", "firing")
    assert alert["value"] == 0.5
    assert "tenant acme: 50.0% of landed events quarantined" in alert["text"]
    time.sleep(WINDOW_S + 1)
    metrics.record(stages("acme", landed=100))
    tick(tick(cursor))
    assert [r.json()["alert"]["status"] for r in receiver.requests] == ["firing", "resolved"]


def test_a_target_that_is_down_fails_the_tick_and_the_next_one_posts(watched: Watched) -> None:
    metrics, receiver = watched.metrics, watched.receiver
    metrics.record(stages("acme", landed=10))
    first = harness.tick(alert_sensor, watched.instance, None)
    assert isinstance(first, SensorResult)
    metrics.record(stages("acme", landed=10, quarantined=10))
    receiver.stop()
    with pytest.raises(Exception, match="cannot reach"):
        harness.tick(alert_sensor, watched.instance, first.cursor)
    receiver.start()
    again = harness.tick(alert_sensor, watched.instance, first.cursor)
    assert isinstance(again, SensorResult)
    assert [r.json()["alert"]["status"] for r in receiver.wait_for(1)] == ["firing"]


def test_without_alerts_in_the_config_it_skips_saying_so(lily_home: Path) -> None:
    with instance_for_test() as instance:
        result = harness.tick(alert_sensor, instance, None)
    assert isinstance(result, SkipReason)
    assert "no `alerts:` in LILY_CONFIG" in (result.skip_message or "")
