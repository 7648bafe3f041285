"""Alerts inside Dagster, for teams without Prometheus: the alert sensor's judgement, from the
pipeline metrics (lib/metrics) and `alerts:` of LILY_CONFIG. Pure: the sensor keeps `AlertState`
in its cursor and posts what `evaluate` returns.

Two conditions: a tenant's quarantine share over the last `window_s` (quarantined / landed
events, both from their counters) above `quarantine_share`, and a Kafka topic's lag above
`kafka_lag`. A condition that starts holding fires once; once it stops holding it resolves once;
after that, the same alert stays quiet for `cooldown_s` even if it holds again."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from lily_dagster.settings import AlertsConfig, ConfigError, LilyConfigFile

FIRING, RESOLVED = "firing", "resolved"


@dataclass(frozen=True)
class Alert:
    """One message: an alert starting or ending."""

    key: str  # quarantine_share:<tenant> or kafka_lag:<topic>
    status: str  # firing or resolved
    value: float
    threshold: float
    at: float

    @property
    def text(self) -> str:
        kind, subject = self.key.split(":", 1)
        what = (
            f"tenant {subject}: {self.value:.1%} of landed events quarantined "
            f"(threshold {self.threshold:.1%})"
            if kind == "quarantine_share"
            else f"Kafka topic {subject}: {self.value:,.0f} messages behind "
            f"(threshold {self.threshold:,.0f})"
        )
        return f"Lily alert {self.status}: {what}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "text": self.text}


@dataclass
class AlertState:
    """What the sensor remembers between ticks (its cursor)."""

    # tenant -> [(time, landed, quarantined)] within the window, oldest first
    samples: dict[str, list[list[float]]] = field(default_factory=dict)
    firing: dict[str, float] = field(default_factory=dict)  # key -> since
    resolved: dict[str, float] = field(default_factory=dict)  # key -> when

    @classmethod
    def loads(cls, data: Mapping[str, Any] | None) -> AlertState:
        return cls(**dict(data)) if data else cls()

    def dumps(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    config: AlertsConfig,
    state: AlertState,
    now: float,
    totals: Mapping[str, tuple[float, float]],
    lags: Mapping[str, float],
) -> list[Alert]:
    """The alerts to post now, `state` updated as if they were posted. `totals`: tenant ->
    (landed, quarantined) counters; `lags`: topic -> messages behind."""
    values: dict[str, float] = {}
    for tenant, (landed, quarantined) in totals.items():
        share = _windowed_share(state, config.window_s, now, tenant, landed, quarantined)
        if share is not None:
            values[f"quarantine_share:{tenant}"] = share
    values.update({f"kafka_lag:{topic}": lag for topic, lag in lags.items()})
    alerts = []
    for key in sorted({*values, *state.firing}):
        value, threshold = values.get(key, 0.0), _threshold(config, key)
        holds = key in values and value > threshold
        if holds and key not in state.firing:
            if now - state.resolved.get(key, -1e18) < config.cooldown_s:
                continue  # cooling down after the last one
            state.firing[key] = now
            alerts.append(Alert(key, FIRING, value, threshold, now))
        elif not holds and key in state.firing:
            del state.firing[key]
            state.resolved[key] = now
            alerts.append(Alert(key, RESOLVED, value, threshold, now))
    return alerts


def _windowed_share(
    state: AlertState, window_s: int, now: float, tenant: str, landed: float, quarantined: float
) -> float | None:
    """Quarantined / landed over the window (None: nothing landed in it, or the first look)."""
    kept = [s for s in state.samples.get(tenant, []) if now - s[0] <= window_s]
    kept.append([now, landed, quarantined])
    state.samples[tenant] = kept
    first = kept[0]
    landed_in = landed - first[1]
    if len(kept) < 2 or landed_in <= 0:
        return None
    return max(0.0, quarantined - first[2]) / landed_in


def _threshold(config: AlertsConfig, key: str) -> float:
    return config.quarantine_share if key.startswith("quarantine_share:") else config.kafka_lag


def pipeline_figures(
    counters: list[tuple[str, dict[str, str], float]],
    gauges: list[tuple[str, dict[str, str], float]],
) -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
    """From the metrics store's samples: tenant -> (landed, quarantined), topic -> lag."""
    totals: dict[str, list[float]] = {}
    for name, labels, value in counters:
        stage = labels.get("stage")
        if name == "lily_events_total" and stage in ("landed", "quarantined"):
            pair = totals.setdefault(labels["tenant"], [0.0, 0.0])
            pair[0 if stage == "landed" else 1] += value
    lags = {lb["topic"]: v for n, lb, v in gauges if n == "lily_kafka_lag_messages"}
    return {t: (p[0], p[1]) for t, p in totals.items()}, lags


def check_alerts_config(config: LilyConfigFile) -> None:
    """`alerts.target` names a target whose type can post an alert (ConfigError)."""
    from lily_dagster.lib.targets import get_target

    if config.alerts is None:
        return
    target = next(t for t in config.targets if t.name == config.alerts.target)
    if not hasattr(get_target(target.type), "alert"):
        raise ConfigError(
            f"alerts.target: target {target.name!r} is of type {target.type!r}, which cannot "
            "post alerts (slack, teams and webhook can)"
        )


def post(config: LilyConfigFile, alert: Alert) -> None:
    """Send `alert` to the configured alerts target (TargetUnavailableError,
    TargetRejectedError as a delivery would)."""
    from lily_dagster.lib.targets import DeliveryContext, get_target

    assert config.alerts is not None
    target_config = next(t for t in config.targets if t.name == config.alerts.target)
    target = get_target(target_config.type)
    subject = alert.key.split(":", 1)[1]
    ctx = DeliveryContext(
        tenant=subject if alert.key.startswith("quarantine_share:") else "",
        target=target_config.name,
        idempotency_key=f"alert:{alert.key}:{alert.status}:{alert.at:.0f}",
        timeout_s=10,
    )
    target.alert(alert, target.configure(target_config), ctx)  # type: ignore[attr-defined]
