"""bulk_backfill: a tenant's whole estate loaded from envelope files, one run per shard.

Partitioned by tenant and shard (`LILY_BACKFILL_SHARDS` shards, default 4). Launch it from the
UI (Materialize → the tenant's shards; config `source`) or with `lily backfill`. The
BackfillPolicy gives one run per shard, so a backfill of any size is a handful of runs, and
on Kubernetes each shard is its own pod (`dagster-k8s/config` below: resources per pod).
"""

import json

from dagster import (
    AssetExecutionContext,
    AssetSelection,
    BackfillPolicy,
    Config,
    MaterializeResult,
    MetadataValue,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
    asset,
    define_asset_job,
    in_process_executor,
)

from lily_dagster.defs.partitions import tenant_partitions
from lily_dagster.defs.resources import LilyResource
from lily_dagster.lib.backfill import run_backfill
from lily_dagster.settings import Settings

SHARDS = Settings.from_env().backfill_shards
shard_partitions = StaticPartitionsDefinition([str(i) for i in range(SHARDS)])
backfill_partitions = MultiPartitionsDefinition(
    {"tenant": tenant_partitions, "shard": shard_partitions}
)
# Per shard pod on Kubernetes (K8sRunLauncher): with 500k-row batches a shard peaks at
# ~1.2-1.5 GiB (measured at 1M and 10M assets: two batches in memory at once).
K8S_SHARD_CONFIG = {
    "container_config": {
        "resources": {
            "requests": {"cpu": "2", "memory": "3Gi"},
            "limits": {"cpu": "2", "memory": "4Gi"},
        }
    },
    "pod_spec_config": {"restart_policy": "Never"},
}


class BackfillRunConfig(Config):
    """`source`: a file, a directory or an s3:// prefix of envelope files (JSONL/Parquet)."""

    source: str
    batch_rows: int = 500_000


@asset(
    partitions_def=backfill_partitions,
    group_name="backfill",
    description="A tenant's estate loaded in bulk from envelope files, shard by shard, "
    "through the live path's gates, hooks and hub writer; resumable per shard.",
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1),
    kinds={"polars"},
    pool="lily_hub",
)
def bulk_backfill(
    context: AssetExecutionContext, config: BackfillRunConfig, lily: LilyResource
) -> MaterializeResult:
    key = context.partition_key
    assert isinstance(key, MultiPartitionKey)
    tenant, shard = key.keys_by_dimension["tenant"], int(key.keys_by_dimension["shard"])
    settings = lily.settings()

    report = run_backfill(
        lily.hub(),
        lily.quarantine(),
        settings.config,
        tenant,
        config.source,
        shards=SHARDS,
        shard=shard,
        batch_rows=config.batch_rows,
        max_event_bytes=settings.max_event_bytes,
        progress=lambda r: context.log.info(
            f"{tenant} shard {shard}: batch {r.batches}, {r.rows_read:,} rows read, "
            f"{r.rows_per_s:,.0f} rows/s"
        ),
        metrics=lily.metrics(),
    )
    return MaterializeResult(
        metadata={
            **{k: v for k, v in report.as_dict().items() if isinstance(v, int | float)},
            "stage_seconds": MetadataValue.json(report.stage_seconds),
            "source": MetadataValue.text(config.source),
            # The tenant's estate is whole once every shard has finished.
            "shards_left": MetadataValue.json(report.shards_left),
        }
    )


# One shard per run (the BackfillPolicy), one run per pod (K8sRunLauncher reads the
# `dagster-k8s/config` run tag for the pod's resources).
bulk_backfill_job = define_asset_job(
    "bulk_backfill_job",
    selection=AssetSelection.assets(bulk_backfill),
    executor_def=in_process_executor,
    tags={"dagster-k8s/config": json.dumps(K8S_SHARD_CONFIG)},
    description="Loads one tenant shard of a bulk backfill (config `source`).",
)
