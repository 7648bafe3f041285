"""CONTRACT.md §8 from outside: after a workload through Kafka and the webhook receiver,
the pipeline's metrics on the receiver's `GET /metrics` equal what the hub and quarantine
exports show, and survive a restart of the receiver.

Valid and invalid events go through Kafka (invalid ones land, then validation quarantines
them), valid ones through the webhook too, for two tenants; one target refuses every change
of one tenant (dead letters). Every event names its own record, so events applied = records."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lily_dagster_tests.contract import outside
from lily_dagster_tests.contract.outside import WebhookTarget

JWT_SECRET = "metrics-hs256-secret-0123456789abcdef0123"
TOPIC = "metrics.events"
TENANTS = ("acme", "globex")
REFUSE_PATH = "/hooks/refuse"
ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def envelope(tenant: str, via: str, i: int) -> dict[str, Any]:
    return outside.table_envelope(tenant, via, i)


def invalid(tenant: str, i: int) -> dict[str, Any]:
    """Quarantined by validation: an unknown op, or no qualified name."""
    bad = envelope(tenant, "bad", i)
    if i % 2:
        bad["op"] = "explode"
    else:
        del bad["asset"]["qualified_name"]
    return bad


@dataclass
class Stack:
    env: dict[str, str]
    api: str
    prometheus: int  # the port of a real Prometheus that scraped the receiver all along
    scrape: Samples
    exports: dict[str, list[dict[str, Any]]]
    quarantine: dict[str, list[dict[str, Any]]]


def _config(target: WebhookTarget) -> dict[str, Any]:
    return outside.refusing_target_config(target, TENANTS, REFUSE_PATH, "METRICS_TARGET_SECRET")


def _feed(small: outside.SmallStack) -> None:
    env, api = small.env, small.api
    kafka = [envelope(t, "kafka", i) for t in TENANTS for i in range(25)]
    kafka += [invalid(t, i) for t in TENANTS for i in range(4 if t == "acme" else 3)]
    outside.produce(
        env["LILY_KAFKA_BOOTSTRAP"],
        TOPIC,
        [(e["event_id"].encode(), json.dumps(e).encode()) for e in kafka],
    )
    with httpx.Client(timeout=30) as client:
        for tenant in TENANTS:
            token = outside.token(env, tenant, "lily:ingest")
            answer = client.post(
                f"{api}/v1/tenants/{tenant}/events",
                content=json.dumps([envelope(tenant, "webhook", i) for i in range(10)]).encode(),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            assert answer.status_code == 202, answer.text


def scrape(api: str) -> Samples:
    text = httpx.get(f"{api}/metrics", timeout=30).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    secrets = {"LILY_JWT_HS256_SECRET": JWT_SECRET, "METRICS_TARGET_SECRET": "metrics-target"}
    root = tmp_path_factory.mktemp("metrics")
    prometheus = outside.free_port()
    with outside.processes() as started:

        def watched_feed(small: outside.SmallStack) -> None:
            # Prometheus scrapes the receiver from before the first event to the end.
            started.append(outside.start_prometheus(prometheus, small.api, ALERTS, root))
            _feed(small)

        with outside.idle_stack(
            root, TOPIC, _config, REFUSE_PATH, watched_feed, **secrets
        ) as small:
            yield Stack(
                env=small.env,
                api=small.api,
                prometheus=prometheus,
                scrape=scrape(small.api),
                exports={t: outside.hub_export(small.env, t) for t in TENANTS},
                quarantine={t: outside.quarantine_export(small.env, t) for t in TENANTS},
            )


@pytest.mark.parametrize("tenant", TENANTS)
def test_event_counts_equal_the_exports(stack: Stack, tenant: str) -> None:
    samples, records = stack.scrape, stack.exports[tenant]
    quarantined = len(stack.quarantine[tenant])
    assert quarantined == (4 if tenant == "acme" else 3)
    assert value(samples, "lily_events_total", tenant=tenant, stage="applied") == len(records)
    assert value(samples, "lily_events_total", tenant=tenant, stage="quarantined") == quarantined
    assert value(samples, "lily_events_total", tenant=tenant, stage="valid") == len(records)
    landed = value(samples, "lily_events_total", tenant=tenant, stage="landed")
    assert landed == len(records) + quarantined == 35 + quarantined


@pytest.mark.parametrize("tenant", TENANTS)
def test_quarantined_by_reason_equals_the_quarantine_export(stack: Stack, tenant: str) -> None:
    by_reason = Counter(e["reason"] for e in stack.quarantine[tenant])
    assert len(by_reason) == 2
    for reason, n in by_reason.items():
        assert value(stack.scrape, "lily_quarantined_total", tenant=tenant, reason=reason) == n


@pytest.mark.parametrize("tenant", TENANTS)
def test_hub_records_gauge_and_latency_histogram(stack: Stack, tenant: str) -> None:
    records = stack.exports[tenant]
    active = sum(1 for r in records if r["status"] == "ACTIVE")
    assert value(stack.scrape, "lily_hub_records", tenant=tenant, status="ACTIVE") == active == 35
    assert value(stack.scrape, "lily_hub_records", tenant=tenant, status="DELETED") == 0
    count = value(stack.scrape, "lily_end_to_end_latency_seconds_count", tenant=tenant)
    inf = value(stack.scrape, "lily_end_to_end_latency_seconds_bucket", tenant=tenant, le="+Inf")
    assert count == inf == len(records)
    assert 0 < value(stack.scrape, "lily_end_to_end_latency_seconds_sum", tenant=tenant) < 600 * 35


def test_kafka_lag_is_zero_once_idle(stack: Stack) -> None:
    assert ("lily_kafka_lag_messages", (("topic", TOPIC),)) in stack.scrape
    assert value(stack.scrape, "lily_kafka_lag_messages", topic=TOPIC) == 0


def test_dead_letters_and_pending_changes_per_target(stack: Stack) -> None:
    dead = value(stack.scrape, "lily_dead_letters", tenant="acme", target="refusing")
    listed = outside.json_lines(
        outside.lily_ok("dlq", "list", "--tenant", "acme", "--target", "refusing", env=stack.env)
    )
    assert dead == len(listed) > 0
    pending = ("lily_propagation_pending_changes", (("target", "refusing"), ("tenant", "acme")))
    assert stack.scrape.get(pending) == 0  # dead-lettered changes are dealt with


def test_hub_requests_are_counted(stack: Stack) -> None:
    assert value(stack.scrape, "lily_hub_requests_total", hub="local", outcome="ok") > 0
    assert value(stack.scrape, "lily_hub_requests_total", hub="local", outcome="failed") == 0


def test_every_contract_family_is_described(stack: Stack) -> None:
    text = httpx.get(f"{stack.api}/metrics", timeout=30).text
    for name, kind in [
        ("lily_events_total", "counter"),
        ("lily_quarantined_total", "counter"),
        ("lily_hub_records", "gauge"),
        ("lily_kafka_lag_messages", "gauge"),
        ("lily_end_to_end_latency_seconds", "histogram"),
        ("lily_propagation_pending_changes", "gauge"),
        ("lily_dead_letters", "gauge"),
        ("lily_hub_requests_total", "counter"),
    ]:
        assert f"# TYPE {name} {kind}" in text


def test_counters_survive_a_restart_of_the_receiver(stack: Stack, tmp_path: Path) -> None:
    port = outside.free_port()
    with outside.processes() as started:
        started.append(outside.start_webhook(port, stack.env, tmp_path / "again.log"))
        again = scrape(f"http://127.0.0.1:{port}")
    pipeline = {k: v for k, v in stack.scrape.items() if k[0].startswith(PIPELINE_PREFIXES)}
    assert pipeline and all(again.get(k) == v for k, v in pipeline.items())


PIPELINE_PREFIXES = ("lily_events", "lily_quarantined", "lily_hub_records", "lily_end_to_end")
PER_TARGET = ("lily_propagation_pending_changes", "lily_dead_letters")


def test_prometheus_reads_the_same_figures_as_the_exports(stack: Stack) -> None:
    """A real Prometheus scraped the receiver during the ingest; its latest samples, read
    through its HTTP API, are the exports' figures."""
    expected = {t: float(len(stack.exports[t])) for t in TENANTS}
    query = 'sum by (tenant) (lily_events_total{stage="applied"})'
    deadline, seen = time.monotonic() + 30, {}
    while time.monotonic() < deadline:
        found = outside.prometheus_query(stack.prometheus, query)
        seen = {r["metric"]["tenant"]: float(r["value"][1]) for r in found}
        if seen == expected:
            break
        time.sleep(0.5)
    assert seen == expected
    reasons = outside.prometheus_query(stack.prometheus, "lily_quarantined_total")
    assert sum(float(r["value"][1]) for r in reasons) == sum(map(len, stack.quarantine.values()))


def test_prometheus_loaded_the_alerting_rules(stack: Stack) -> None:
    answer = httpx.get(f"http://127.0.0.1:{stack.prometheus}/api/v1/rules", timeout=10).json()
    rules = [r for g in answer["data"]["groups"] for r in g["rules"]]
    assert {r["name"] for r in rules} >= {"LilyQuarantineShareHigh", "LilyDeadLetters"}
    assert all(r["health"] in ("ok", "unknown") for r in rules), rules


def test_a_deleted_tenant_leaves_no_series(stack: Stack) -> None:
    """Last in this module: it deletes a tenant of the shared stack."""
    outside.lily_ok("tenant", "delete", "--tenant", "globex", "--yes", env=stack.env)
    after = scrape(stack.api)
    # (the receiver's own lily_webhook_* series count requests it served; they stay)
    pipeline = [k for k in after if k[0].startswith((*PIPELINE_PREFIXES, *PER_TARGET))]
    assert pipeline and not [k for k in pipeline if dict(k[1]).get("tenant") == "globex"]
    assert value(after, "lily_events_total", tenant="acme", stage="applied") == 35
