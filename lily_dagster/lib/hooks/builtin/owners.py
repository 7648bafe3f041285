"""owner-normalise and ownership-map: who owns an asset, in Atlan's terms."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import Field

from lily_dagster.lib.enrichment import normalise_owners, on_distinct
from lily_dagster.lib.hooks import HookContext, PluginOptions, register_hook
from lily_dagster.settings import ConfigError


@register_hook("owner-normalise")
class OwnerNormalise:
    """Owner users and groups trimmed, lower-cased, de-duplicated and sorted."""

    name = "owner-normalise"
    stage = "pre_ingest"

    def apply(self, events: pl.DataFrame, config: None, ctx: HookContext) -> pl.DataFrame:
        return normalise_owners(events)


@register_hook("ownership-map")
class OwnershipMap:
    """Source user and group ids mapped to Atlan users and groups through a per-tenant table.

    settings: users: {source_id: atlan_user}, groups: {source_id: atlan_group}, and/or
    file: a CSV with columns kind (user|group), source_id, atlan_name;
    unmapped: keep (default) | drop.
    """

    name = "ownership-map"
    stage = "pre_ingest"

    class Options(PluginOptions):
        users: dict[str, str] = Field(
            default_factory=dict, description="Source user id → Atlan user name."
        )
        groups: dict[str, str] = Field(
            default_factory=dict, description="Source group id → Atlan group name."
        )
        file: Path | None = Field(
            None, description="A CSV with columns kind (user|group), source_id, atlan_name."
        )
        unmapped: Literal["keep", "drop"] = Field(
            "keep", description="What happens to ids with no mapping: kept as they are, or dropped."
        )

    def configure(self, options: Options) -> dict[str, Any]:
        users, groups = dict(options.users), dict(options.groups)
        if options.file is not None:
            _read_mapping_file(options.file, users, groups)
        if not users and not groups:
            raise ConfigError("needs users, groups or file")
        return {"users": users, "groups": groups, "drop": options.unmapped == "drop"}

    def apply(self, events: pl.DataFrame, config: dict[str, Any], ctx: HookContext) -> pl.DataFrame:
        def mapped(col: str, table: dict[str, str]) -> pl.Expr:
            if not table:
                return pl.col(col)
            keys, values = list(table), list(table.values())
            kept = pl.element().filter(pl.element().is_in(keys)) if config["drop"] else pl.element()
            return (
                pl.col(col).list.eval(kept.replace(keys, values)).list.unique(maintain_order=True)
            )

        # Mapped once per distinct pair of owner lists: they repeat across a batch.
        return on_distinct(
            events,
            [pl.col("owner_users"), pl.col("owner_groups")],
            {
                "owner_users": mapped("owner_users", config["users"]),
                "owner_groups": mapped("owner_groups", config["groups"]),
            },
        )


def _read_mapping_file(path: Path, users: dict[str, str], groups: dict[str, str]) -> None:
    """Add the CSV's rows (kind, source_id, atlan_name) to the user and group tables."""
    try:
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                tables = {"user": users, "group": groups}
                if row["kind"] not in tables:
                    raise ConfigError(f"{path}: kind must be user or group, got {row['kind']!r}")
                tables[row["kind"]][row["source_id"]] = row["atlan_name"]
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except KeyError as exc:
        raise ConfigError(f"{path}: missing column {exc}") from None
