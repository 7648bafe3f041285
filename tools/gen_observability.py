"""Writes deploy/grafana/lily.json (a Grafana dashboard, built with Grafana's own
grafana-foundation-sdk) and deploy/prometheus/alerts.yml (Prometheus alerting rules) over the
pipeline metrics of CONTRACT.md §8, so neither is hand-edited JSON or YAML.

    python tools/gen_observability.py          # write both files
    python tools/gen_observability.py --check  # exit 1 if either is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DatasourceVariable,
    QueryVariable,
    Row,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "lily.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
T = '{tenant=~"$tenant"}'  # every tenant panel follows the dashboard's tenant variable
RATE = "[$__rate_interval]"
# The latency SLO: 99 % of events visible in the hub within 30 s of landing.
SLO_SECONDS, SLO_TARGET = "30.0", 0.99
QUARANTINE_SHARE_MAX = 0.05
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="${datasource}")  # the picked one


def _tenant(selector: str = "") -> str:
    return '{tenant=~"$tenant"' + (f",{selector}" if selector else "") + "}"


def _panel(title: str, unit: str, *queries: tuple[str, str]) -> Timeseries:
    panel = Timeseries().title(title).unit(unit).datasource(PROMETHEUS)
    for expr, legend in queries:
        panel = panel.with_target(Dataquery().expr(expr).legend_format(legend))
    return panel.height(8).span(12)


def _rows() -> list[tuple[str, list[Timeseries]]]:
    latency = f"lily_end_to_end_latency_seconds_bucket{_tenant()}"

    def quantile(q: float) -> str:
        return f"histogram_quantile({q}, sum by (le) (rate({latency}{RATE})))"

    slo_bucket = _tenant('le="' + SLO_SECONDS + '"')
    within = (
        f"sum(rate(lily_end_to_end_latency_seconds_bucket{slo_bucket}{RATE})) / "
        f"sum(rate(lily_end_to_end_latency_seconds_count{T}{RATE}))"
    )
    quarantined, landed = _tenant('stage="quarantined"'), _tenant('stage="landed"')
    return [
        ("Ingest", [
            _panel("Events per second by stage", "ops",
                   (f"sum by (stage) (rate(lily_events_total{T}{RATE}))", "{{stage}}")),
            _panel("Kafka lag", "short", ("sum by (topic) (lily_kafka_lag_messages)", "{{topic}}")),
        ]),
        ("Quality", [
            _panel("Quarantined per second by reason", "ops",
                   (f"sum by (reason) (rate(lily_quarantined_total{T}{RATE}))", "{{reason}}")),
            _panel("Quarantine share of landed events", "percentunit", (
                f"sum(rate(lily_events_total{quarantined}{RATE})) / "
                f"sum(rate(lily_events_total{landed}{RATE}))", "share")),
        ]),
        ("Hub", [
            _panel("Hub records by status", "short",
                   (f"sum by (status) (lily_hub_records{T})", "{{status}}")),
            _panel("Hub requests per second by outcome", "reqps",
                   (f"sum by (hub, outcome) (rate(lily_hub_requests_total{RATE}))",
                    "{{hub}} {{outcome}}")),
        ]),
        ("Propagation", [
            _panel("Changes waiting per target", "short",
                   (f"sum by (target) (lily_propagation_pending_changes{T})", "{{target}}")),
            _panel("Dead letters per target", "short",
                   (f"sum by (target) (lily_dead_letters{T})", "{{target}}")),
        ]),
        ("Latency SLO", [
            _panel("End-to-end latency (landed to visible)", "s",
                   (quantile(0.5), "p50"), (quantile(0.95), "p95")),
            _panel(f"Events visible within {SLO_SECONDS[:-2]} s (SLO {SLO_TARGET:.0%})",
                   "percentunit", (within, "within")),
        ]),
    ]  # fmt: skip


def dashboard() -> dict[str, Any]:
    builder = (
        Dashboard("Lily: metadata pipeline")
        .uid("lily-pipeline")
        .tags(["lily", "generated"])
        .refresh("30s")
        .time("now-6h", "now")
        .with_variable(DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(
            QueryVariable("tenant")
            .label("Tenant")
            .datasource(PROMETHEUS)
            .query("label_values(lily_events_total, tenant)")
            .include_all(True)
            .all_value(".*")
            .multi(True)
        )
    )
    for title, panels in _rows():
        builder = builder.with_row(Row(title))
        for panel in panels:
            builder = builder.with_panel(panel)
    encoded: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True).encode(builder.build()))
    # Unique panel ids and query refIds, as Grafana's own export has them.
    for number, panel in enumerate(encoded["panels"], start=1):
        panel["id"] = number
        for letter, target in zip("ABCDEFGH", panel.get("targets", []), strict=False):
            target["refId"] = letter
    return encoded


def _rule(name: str, expr: str, for_: str, severity: str, summary: str) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity},
        "annotations": {"summary": summary},
    }


def _burn(window: str) -> str:
    """The share of the error budget (events later than the SLO) spent per `window`."""
    bucket = f'lily_end_to_end_latency_seconds_bucket{{le="{SLO_SECONDS}"}}'
    return (
        f"(1 - sum by (tenant) (rate({bucket}[{window}])) / "
        f"sum by (tenant) (rate(lily_end_to_end_latency_seconds_count[{window}])))"
    )


def alerts() -> dict[str, Any]:
    budget = round(1 - SLO_TARGET, 4)
    rules = [
        _rule("LilyKafkaLagGrowing",
              "lily_kafka_lag_messages > 1000 and deriv(lily_kafka_lag_messages[10m]) > 0",
              "10m", "warning", "Kafka topic {{ $labels.topic }} is {{ $value }} messages "
              "behind and the lag keeps growing"),
        _rule("LilyQuarantineShareHigh",
              'sum by (tenant) (rate(lily_events_total{stage="quarantined"}[15m])) / '
              'sum by (tenant) (rate(lily_events_total{stage="landed"}[15m])) > '
              f"{QUARANTINE_SHARE_MAX}",
              "10m", "warning", f"Over {QUARANTINE_SHARE_MAX:.0%} of {{{{ $labels.tenant }}}}'s "
              "events are quarantined"),
        _rule("LilyLatencySLOBurn",
              f"{_burn('1h')} > {14.4 * budget:g} and {_burn('5m')} > {14.4 * budget:g}",
              "2m", "critical", f"{{{{ $labels.tenant }}}} burns its latency budget (99 % "
              f"within {SLO_SECONDS[:-2]} s) 14x too fast"),
        _rule("LilyDeadLetters", "lily_dead_letters > 0", "15m", "warning",
              "{{ $value }} changes of {{ $labels.tenant }} wait in the dead-letter queue of "
              "{{ $labels.target }}: `lily dlq list`, then `lily dlq replay`"),
        _rule("LilyHubThrottled",
              'sum by (hub) (rate(lily_hub_requests_total{outcome="throttled"}[10m])) > 0',
              "10m", "warning", "The {{ $labels.hub }} hub answers 429: lower "
              "LILY_ATLAN_RATE_PER_MIN or ask Atlan for more"),
        _rule("LilyHubFailing",
              'sum by (hub) (rate(lily_hub_requests_total{outcome="failed"}[10m])) > 0',
              "10m", "critical", "Requests to the {{ $labels.hub }} hub fail; batches wait"),
    ]  # fmt: skip
    return {"groups": [{"name": "lily", "rules": rules}]}


def rendered() -> dict[Path, str]:
    head = "# Generated by tools/gen_observability.py: do not edit, change the generator.\n"
    return {
        DASHBOARD: json.dumps(dashboard(), indent=2, sort_keys=True) + "\n",
        ALERTS: head + yaml.safe_dump(alerts(), sort_keys=False, width=100),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if out of date")
    args = parser.parse_args()
    stale = []
    for path, text in rendered().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if stale:
        print(f"out of date (run tools/gen_observability.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
