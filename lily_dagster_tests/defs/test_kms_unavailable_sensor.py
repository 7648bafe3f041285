"""A key service that does not answer skips the Kafka sensor's tick with the reason, lands
nothing and leaves the cursor where it was; once KMS answers, the next tick lands every
event (nothing lost). KMS is moto's server on loopback, Kafka a real broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import SensorResult, SkipReason, instance_for_test
from moto.server import ThreadedMotoServer

from lily_dagster.defs.ingest.sensors import kafka_events_sensor
from lily_dagster.lib.broker import free_port, produce
from lily_dagster.lib.staging import StagingArea
from lily_dagster_tests import sensor_harness as harness
from lily_dagster_tests.support.envelopes import table_messages
from lily_dagster_tests.support.kms import create_key, use_kms

ALIAS = "lily-sensor-test"


def test_kms_down_skips_the_tick_and_loses_nothing(
    kafka_bootstrap: str, topic: str, lily_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()  # nothing listens there yet
    endpoint = f"http://127.0.0.1:{port}"
    use_kms(monkeypatch, endpoint)
    monkeypatch.setenv("LILY_KMS", f"aws-kms:alias/{ALIAS}")
    produce(
        kafka_bootstrap,
        topic,
        [*table_messages("acme", ["A", "B"]), *table_messages("globex", ["C"])],
    )
    staging = StagingArea(lily_home / "staging")
    with instance_for_test() as instance:
        skipped = harness.tick(kafka_events_sensor, instance, None)
        assert isinstance(skipped, SkipReason)
        message = skipped.skip_message or ""
        assert "key service unavailable" in message and "AWS KMS unreachable" in message
        assert "same offsets" in message
        assert staging.tenants_with_pending() == []

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            create_key(endpoint, alias=ALIAS)
            landed = harness.tick(kafka_events_sensor, instance, None)  # the cursor it had
        finally:
            server.stop()
    assert isinstance(landed, SensorResult) and landed.cursor
    assert staging.tenants_with_pending() == ["acme", "globex"]
    assert (lily_home / "keys" / "tenants" / "acme.json").exists()
