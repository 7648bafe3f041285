"""alert_sensor: posts to the `alerts:` target of LILY_CONFIG when a tenant's quarantine
share or a Kafka topic's lag crosses its threshold, and again when it resolves."""

import json
import time

from dagster import DefaultSensorStatus, SensorEvaluationContext, SensorResult, SkipReason, sensor

from lily_dagster.defs.resources import LilyResource
from lily_dagster.lib.alerts import AlertState, evaluate, pipeline_figures, post

ALERT_INTERVAL_S = 30


@sensor(
    minimum_interval_seconds=ALERT_INTERVAL_S,
    default_status=DefaultSensorStatus.RUNNING,
    description="Watches the pipeline metrics: posts to the `alerts:` target of LILY_CONFIG "
    "when a tenant's quarantine share over the window, or a Kafka topic's lag, crosses its "
    "threshold, and once more when it resolves (then quiet for the cool-down).",
)
def alert_sensor(context: SensorEvaluationContext, lily: LilyResource) -> SensorResult | SkipReason:
    settings = lily.settings()
    config = settings.config
    if config.alerts is None:
        return SkipReason("no `alerts:` in LILY_CONFIG: nothing to watch")
    state = AlertState.loads(json.loads(context.cursor) if context.cursor else None)
    totals, lags = pipeline_figures(*lily.metrics().samples())
    alerts = evaluate(config.alerts, state, time.time(), totals, lags)
    # A post that fails fails the tick: its cursor is not saved, so the next tick posts again.
    for alert in alerts:
        post(config, alert)
        context.log.info(alert.text)
    watched = f"{len(totals)} tenants, {len(lags)} topics"
    summary = f"posted {len(alerts)} alerts" if alerts else f"nothing to post ({watched})"
    return SensorResult(skip_reason=summary, cursor=json.dumps(state.dumps()))
