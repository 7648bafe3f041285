"""staged_batches_job: an operator's view of a tenant's pending batches in the UI, and the
release or discard of one (what `lily batches` does from a terminal; README: Pending
batches)."""

from typing import Literal

from dagster import (
    Config,
    Failure,
    MetadataValue,
    OpExecutionContext,
    TableColumn,
    TableRecord,
    TableSchema,
    in_process_executor,
    job,
    op,
)

from lily_dagster.defs.ingest.recovery import run_in_flight
from lily_dagster.defs.partitions import tenant_partitions
from lily_dagster.defs.resources import LilyResource
from lily_dagster.lib.staging import BatchError, discard_batch, list_batches, release_batch

_COLUMNS = ("batch_id", "state", "run_id", "releases", "landed_at", "events", "source")
_SCHEMA = TableSchema(columns=[TableColumn(name, "string") for name in _COLUMNS])


class StagedBatchesConfig(Config):
    """`list` the tenant's pending batches; `release` the claim on `batch_ids` (the next run
    of the tenant takes them); `discard` them (their events go to the quarantine as
    `discarded_by_operator`: nothing is lost)."""

    action: Literal["list", "release", "discard"] = "list"
    batch_ids: list[str] = []


@op(description="Lists, releases or discards a tenant's pending batches (config `action`).")
def staged_batches(
    context: OpExecutionContext, config: StagedBatchesConfig, lily: LilyResource
) -> None:
    tenant = context.partition_key
    staging = lily.staging()
    if config.action != "list" and not config.batch_ids:
        raise Failure(description=f"`{config.action}` needs `batch_ids` (from `list`)")

    def in_flight(run_id: str) -> bool:
        return run_in_flight(context.instance, run_id)

    for batch_id in config.batch_ids if config.action != "list" else []:
        try:
            if config.action == "release":
                done = release_batch(staging, tenant, batch_id, in_flight)
            else:
                done = discard_batch(staging, lily.quarantine(), tenant, batch_id, in_flight)
        except BatchError as exc:
            raise Failure(description=str(exc)) from exc
        context.log.info(f"{config.action}: {done}")
    rows = [b.as_dict() for b in list_batches(staging, tenant)]
    context.add_output_metadata(
        {
            "pending_batches": len(rows),
            "batches": MetadataValue.table(
                [TableRecord({c: str(r.get(c) or "") for c in _COLUMNS}) for r in rows],
                schema=_SCHEMA,
            ),
        }
    )


@job(
    partitions_def=tenant_partitions,
    executor_def=in_process_executor,
    tags={"lily/source": "operator"},
    description="A tenant's pending batches: list them (the run's output shows a table), "
    "release a batch a failed run holds, or discard one (config `action`, `batch_ids`).",
)
def staged_batches_job() -> None:
    staged_batches()
