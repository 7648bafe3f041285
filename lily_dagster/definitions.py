"""Every Lily definition, assembled in one place."""

from dagster import Definitions

from lily_dagster.defs.backfill.assets import bulk_backfill, bulk_backfill_job
from lily_dagster.defs.enrichment.assets import enriched_events
from lily_dagster.defs.hub.assets import hub_records
from lily_dagster.defs.hub.checks import (
    data_quality_job,
    data_quality_schedule,
    hub_records_gx_suite,
)
from lily_dagster.defs.ingest.assets import landed_events
from lily_dagster.defs.ingest.batches import staged_batches_job
from lily_dagster.defs.ingest.poller_sensors import poller_sensors
from lily_dagster.defs.ingest.sensors import (
    kafka_events_sensor,
    quarantine_replay_job,
    tenant_ingest_job,
)
from lily_dagster.defs.ingest.webhook_sensor import webhook_inbox_sensor
from lily_dagster.defs.maintenance.retention import run_retention_job, run_retention_schedule
from lily_dagster.defs.propagation.assets import build_propagation
from lily_dagster.defs.reconciliation.assets import (
    nightly_reconciliation,
    reconciliation,
    reconciliation_job,
)
from lily_dagster.defs.resources import KafkaResource, LilyResource, PolarsParquetIOManager
from lily_dagster.defs.validation.assets import validated_events
from lily_dagster.defs.validation.quarantine import quarantined_events
from lily_dagster.lib.hooks import check_hook_config
from lily_dagster.lib.propagation import check_target_config
from lily_dagster.settings import Settings

# Bad configuration (LILY_CONFIG, hook settings, targets) fails here, when the code location
# loads, with its one-line message, not in the middle of a run.
_settings = Settings.from_env()
check_hook_config(_settings.config)
check_target_config(_settings.config)
propagation = build_propagation(_settings)

defs = Definitions(
    assets=[
        landed_events,
        validated_events,
        enriched_events,
        hub_records,
        quarantined_events,
        reconciliation,
        bulk_backfill,
        *propagation["assets"],
    ],
    asset_checks=[hub_records_gx_suite],
    jobs=[
        tenant_ingest_job,
        quarantine_replay_job,
        data_quality_job,
        reconciliation_job,
        bulk_backfill_job,
        run_retention_job,
        staged_batches_job,
        *propagation["jobs"],
    ],
    schedules=[data_quality_schedule, nightly_reconciliation, run_retention_schedule],
    sensors=[kafka_events_sensor, webhook_inbox_sensor, *poller_sensors, *propagation["sensors"]],
    resources={
        "lily": LilyResource(),
        "kafka": KafkaResource(),
        "io_manager": PolarsParquetIOManager(),
    },
)
