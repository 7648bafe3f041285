"""`run_latency` end to end: embedded broker, the real daemon and runs, LocalHub polled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lily_dagster.bench.latency import run_latency


@pytest.mark.timeout(60)
def test_every_event_produced_becomes_visible_with_ordered_percentiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LILY_KAFKA_BOOTSTRAP", raising=False)  # the embedded broker
    result = run_latency(rate=50, seconds=5, tenants=2, home=tmp_path / "lily", drain_timeout_s=30)
    json.dumps(result)  # JSON-ready, as `lily bench latency` prints it
    assert abs(result["produced"] - 50 * 5) <= 0.1 * 50 * 5
    assert result["lost"] == 0 and result["visible"] == result["produced"]
    latency = result["latency_s"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["max"]
    # One run per tick covers every tenant with new events: one tick may have taken all.
    assert result["runs"]["count"] >= 1
    assert result["runs"]["by_status"].get("failure", 0) == 0
    # What the scaling table shows of each configuration.
    assert result["storage"] == "sqlite"
    assert result["runs"]["tenants_per_run"]["max"] <= 2
    assert result["runs"]["dagster_events_per_run"]["p50"] > 0
