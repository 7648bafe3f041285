"""One sensor per registered poller (`<name>_poll_sensor`): poll each tenant that configures
it, land what comes back through the same path as Kafka and webhooks."""

import hashlib
import json
from datetime import UTC, datetime

import polars as pl
from dagster import (
    DefaultSensorStatus,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from lily_dagster.defs.ingest.sensors import (
    key_service_down,
    land_and_request_runs,
    tenant_ingest_job,
)
from lily_dagster.defs.resources import LilyResource
from lily_dagster.lib.crypto import KmsUnavailableError
from lily_dagster.lib.pollers import PollError, get_poller, poller_names, poller_options
from lily_dagster.lib.staging import landed_frame
from lily_dagster.settings import ConfigError


def build_poller_sensor(poller_name: str) -> SensorDefinition:
    poller = get_poller(poller_name)
    assert poller is not None
    sensor_name = f"{poller_name.replace('-', '_')}_poll_sensor"

    @sensor(
        name=sensor_name,
        job=tenant_ingest_job,
        minimum_interval_seconds=poller.interval_s,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Polls {poller_name} for every tenant that configures it (LILY_CONFIG "
        f"tenants[].pollers.{poller_name}); cursor: one position per tenant.",
    )
    def poll_sensor(
        context: SensorEvaluationContext, lily: LilyResource
    ) -> SensorResult | SkipReason:
        settings = lily.settings()
        cursors: dict[str, str | None] = json.loads(context.cursor or "{}")
        frames: dict[str, pl.DataFrame] = {}
        problems: list[str] = []
        now = datetime.now(UTC)
        for tenant in settings.config.tenants:
            config = tenant.pollers.get(poller_name)
            if config is None or not config.enabled:
                continue
            try:
                options = poller_options(poller_name, config)
                result = poller.poll(tenant.name, options, cursors.get(tenant.name))
            # This tenant waits for the next tick; the others go on.
            except (PollError, ConfigError) as exc:
                problems.append(f"{tenant.name}: {exc}")
                continue
            if result.envelopes:
                payloads = [
                    json.dumps({**e, "tenant": tenant.name}).encode() for e in result.envelopes
                ]
                frames[tenant.name] = landed_frame(
                    [f"poll:{poller_name}:{i}" for i in range(len(payloads))],
                    payloads,
                    [now] * len(payloads),
                )
            if result.cursor is not None:
                cursors[tenant.name] = result.cursor
        for problem in problems:
            context.log.warning(f"{poller_name} poll failed for {problem}")
        next_cursor = json.dumps(cursors, sort_keys=True)
        if not frames:
            reason = "; ".join(problems) or f"no new {poller_name} events"
            return SensorResult(skip_reason=reason, cursor=next_cursor)
        digest = hashlib.sha256((context.cursor or "").encode() + next_cursor.encode()).hexdigest()
        try:
            return land_and_request_runs(
                context,
                lily,
                "poll",
                f"poll-{poller_name}-{digest[:16]}",
                frames,
                {"poller": poller_name},
                next_cursor,
            )
        except KmsUnavailableError as exc:  # cursors unmoved: polled again next tick
            return key_service_down(exc, "will poll again from the same positions")

    return poll_sensor


poller_sensors = [build_poller_sensor(name) for name in poller_names()]
