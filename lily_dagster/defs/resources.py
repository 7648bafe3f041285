"""Resources shared by every domain: Lily's state directories, the hub, Kafka, IO."""

from pathlib import Path

import dagster as dg
import polars as pl
from dagster import (
    ConfigurableIOManager,
    ConfigurableResource,
    DagsterInvariantViolationError,
    InputContext,
    OutputContext,
)

from lily_dagster.lib.crypto import ciphers_of
from lily_dagster.lib.hub import open_hub
from lily_dagster.lib.hub.base import MetadataHub
from lily_dagster.lib.intermediates import read_frame, write_frame
from lily_dagster.lib.metrics import MetricsStore
from lily_dagster.lib.propagation import Propagator
from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster.lib.staging import StagingArea
from lily_dagster.settings import Settings


class LilyResource(ConfigurableResource):
    """Lily's state under $LILY_HOME; `home` overrides the environment (tests, tools)."""

    home: str | None = None

    def settings(self) -> Settings:
        settings = Settings.from_env()
        if self.home:
            settings = settings.model_copy(update={"home": Path(self.home).resolve()})
        return settings

    def staging(self) -> StagingArea:
        return StagingArea.from_settings(self.settings())

    def quarantine(self) -> QuarantineStore:
        return QuarantineStore.from_settings(self.settings())

    def hub(self) -> MetadataHub:
        return open_hub(self.settings())

    def metrics(self) -> MetricsStore:
        return MetricsStore.from_settings(self.settings())

    def propagator(self) -> Propagator:
        return Propagator.from_settings(self.settings(), self.hub())


class KafkaResource(ConfigurableResource):
    """The Kafka cluster and topics to watch; unset fields come from the environment."""

    bootstrap_servers: str | None = None
    topics: list[str] | None = None

    def resolved(self) -> tuple[str, tuple[str, ...]]:
        settings = Settings.from_env()
        return (
            self.bootstrap_servers or settings.kafka_bootstrap,
            tuple(self.topics) if self.topics else settings.kafka_topics,
        )


class PolarsParquetIOManager(ConfigurableIOManager):
    """Hands polars frames from one ingest step to the next, as Parquet under
    $LILY_HOME/io/{asset}/{run_id}/{partition}.parquet ({first}...{last}.parquet for a run
    over a range of partitions).

    The files are scoped to the run that wrote them: a step reads its upstream's output from
    its own run, or from the parent run it re-executes. An upstream asset that is not part of
    the run (materialising `hub_records` alone from the UI) loads as None, never as a frame
    some earlier run left: the ingest chain moves events only within a run
    (docs/operating.md). An input may ask for a subset of columns with
    `AssetIn(metadata={"columns": [...]})`. Each tenant's rows are sealed with its key
    (lib/intermediates.py).
    """

    base_dir: str | None = None

    def _base(self) -> Path:
        return Path(self.base_dir) if self.base_dir else Settings.from_env().io_dir

    def _path(self, context: InputContext | OutputContext, run_id: str) -> Path:
        keys = list(context.asset_partition_keys) if context.has_asset_partitions else []
        name = "__all__" if not keys else keys[0] if len(keys) == 1 else f"{keys[0]}...{keys[-1]}"
        return self._base().joinpath(*context.asset_key.path) / run_id / f"{name}.parquet"

    def handle_output(self, context: OutputContext, obj: pl.DataFrame | None) -> None:
        if obj is None:  # a step that had no input in its run hands nothing on
            return
        path = self._path(context, context.run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(context.asset_partition_keys) if context.has_asset_partitions else []
        write_frame(obj, path, keys, ciphers_of(Settings.from_env()))

    def load_input(self, context: InputContext) -> pl.DataFrame | None:
        source_run = _source_run_id(context)
        if source_run is None:
            return None
        path = self._path(context, source_run)
        if not path.exists():
            return None
        columns = (context.definition_metadata or {}).get("columns")
        return read_frame(path, ciphers_of(Settings.from_env()), columns=columns)


def _source_run_id(context: InputContext) -> str | None:
    """The run whose output this input is (this run, or the parent a re-execution takes it
    from); None when the upstream asset is not part of the run: Dagster then builds an
    artificial upstream context without a run."""
    upstream = context.upstream_output
    if upstream is None or upstream.step_key == "none":
        return None
    try:
        return upstream.run_id
    except DagsterInvariantViolationError:
        return None


@dg.definitions
def resources() -> dg.Definitions:
    """The resources every definition shares (settings come from the environment)."""
    return dg.Definitions(
        resources={
            "lily": LilyResource(),
            "kafka": KafkaResource(),
            "io_manager": PolarsParquetIOManager(),
        }
    )
