"""Resources shared by every domain: Lily's state directories, the hub, Kafka, IO."""

from pathlib import Path

import polars as pl
from dagster import ConfigurableIOManager, ConfigurableResource, InputContext, OutputContext

from lily_dagster.lib.hub import open_hub
from lily_dagster.lib.hub.base import MetadataHub
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
        return StagingArea(self.settings().staging_dir)

    def quarantine(self) -> QuarantineStore:
        return QuarantineStore(self.settings().quarantine_dir)

    def hub(self) -> MetadataHub:
        return open_hub(self.settings())

    def propagator(self) -> Propagator:
        settings = self.settings()
        return Propagator(self.hub(), settings.propagation_dir, settings.dlq_dir)


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
    """Stores polars frames as Parquet under $LILY_HOME/io/{asset}/{partition}.parquet
    ({first}...{last}.parquet for a run over a range of partitions).

    An input may ask for a subset of columns with `AssetIn(metadata={"columns": [...]})`.
    """

    base_dir: str | None = None

    def _path(self, context: InputContext | OutputContext) -> Path:
        base = Path(self.base_dir) if self.base_dir else Settings.from_env().io_dir
        keys = list(context.asset_partition_keys) if context.has_asset_partitions else []
        name = "__all__" if not keys else keys[0] if len(keys) == 1 else f"{keys[0]}...{keys[-1]}"
        return base.joinpath(*context.asset_key.path) / f"{name}.parquet"

    def handle_output(self, context: OutputContext, obj: pl.DataFrame) -> None:
        path = self._path(context)
        path.parent.mkdir(parents=True, exist_ok=True)
        obj.write_parquet(path)

    def load_input(self, context: InputContext) -> pl.DataFrame:
        columns = (context.definition_metadata or {}).get("columns")
        return pl.read_parquet(self._path(context), columns=columns)
