"""The alert sensor's judgement (lib/alerts): a quarantine burst or a Kafka lag fires once,
stays quiet while it holds, resolves once, then cools down; a bad `alerts:` fails at load
naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from lily_dagster.lib.alerts import FIRING, RESOLVED, AlertState, check_alerts_config, evaluate
from lily_dagster.settings import AlertsConfig, ConfigError, load_config_file

pytestmark = pytest.mark.unit
CONFIG = AlertsConfig(
    target="ops", quarantine_share=0.2, kafka_lag=100, window_s=60, cooldown_s=300
)


def tick(state: AlertState, now: float, landed: float, quarantined: float, lag: float = 0):
    alerts = evaluate(CONFIG, state, now, {"acme": (landed, quarantined)}, {"events": lag})
    return [(a.key, a.status) for a in alerts], alerts


def test_a_quarantine_burst_fires_once_and_resolves_once() -> None:
    state = AlertState()
    assert tick(state, 0, 100, 0)[0] == []  # the first look is the baseline
    fired, alerts = tick(state, 10, 200, 50)  # 50 of 100 new events quarantined
    assert fired == [("quarantine_share:acme", FIRING)]
    assert "50.0% of landed events quarantined" in alerts[0].text
    assert tick(state, 20, 300, 60)[0] == []  # still over: no second message
    assert tick(state, 90, 1300, 60)[0] == [("quarantine_share:acme", RESOLVED)]
    assert tick(state, 100, 1400, 60)[0] == []


def test_a_resolved_alert_cools_down_before_firing_again() -> None:
    state = AlertState()
    tick(state, 0, 100, 0)
    tick(state, 10, 200, 50)
    tick(state, 80, 1200, 50)  # resolved at 80
    assert tick(state, 100, 1300, 150)[0] == []  # over again, within the cool-down
    assert tick(state, 380, 1350, 200)[0] == []  # a new window starts here
    assert tick(state, 390, 1400, 250)[0] == [("quarantine_share:acme", FIRING)]


def test_kafka_lag_fires_and_resolves() -> None:
    state = AlertState()
    assert tick(state, 0, 0, 0, lag=500)[0] == [("kafka_lag:events", FIRING)]
    assert tick(state, 10, 0, 0, lag=50)[0] == [("kafka_lag:events", RESOLVED)]


def test_the_state_survives_the_cursor_round_trip() -> None:
    state = AlertState()
    tick(state, 0, 100, 0)
    tick(state, 10, 200, 50)
    again = AlertState.loads(state.dumps())
    assert tick(again, 20, 300, 70)[0] == []


def write(tmp_path: Path, alerts: str, target_type: str = "webhook") -> Path:
    path = tmp_path / "lily.yaml"
    path.write_text(
        f"targets:\n  - {{name: ops, type: {target_type}, url: 'http://127.0.0.1:9/x', "
        f"secret_env: OPS_SECRET}}\nalerts: {alerts}\n"
    )
    return path


@pytest.mark.parametrize(
    ("alerts", "named"),
    [
        ("{target: ops, quarantine_share: 1.5}", "alerts.quarantine_share"),
        ("{target: ops, kafka_lag: 0}", "alerts.kafka_lag"),
        ("{target: ops, window_s: 1}", "alerts.window_s"),
        ("{target: ops, cooldown: 5}", "alerts.cooldown"),
        ("{target: nobody}", "alerts.target: no target named 'nobody'"),
    ],
)
def test_a_bad_alerts_setting_fails_at_load_naming_it(
    tmp_path: Path, alerts: str, named: str
) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config_file(write(tmp_path, alerts))


def test_a_target_that_cannot_post_alerts_is_refused(tmp_path: Path) -> None:
    config = load_config_file(write(tmp_path, "{target: ops}", target_type="dbt"))
    with pytest.raises(ConfigError, match="cannot post alerts"):
        check_alerts_config(config)
