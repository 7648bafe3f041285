"""owner-normalise and ownership-map: who owns an asset, in Atlan's terms."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import polars as pl

from lily_dagster.lib.enrichment import normalise_owners, on_distinct
from lily_dagster.lib.hooks import HookContext, only_settings, register_hook
from lily_dagster.settings import ConfigError


@register_hook("owner-normalise")
class OwnerNormalise:
    """Owner users and groups trimmed, lower-cased, de-duplicated and sorted."""

    name = "owner-normalise"
    stage = "pre_ingest"

    def configure(self, settings: dict[str, Any]) -> None:
        if settings:
            raise ConfigError(f"takes no settings, got {sorted(settings)}")

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

    def configure(self, settings: dict[str, Any]) -> dict[str, Any]:
        only_settings(settings, {"users", "groups", "file", "unmapped"})
        for key in ("users", "groups"):
            if not isinstance(settings.get(key) or {}, dict):
                raise ConfigError(f"{key} must be a mapping of source id to Atlan name")
        users = {str(k): str(v) for k, v in (settings.get("users") or {}).items()}
        groups = {str(k): str(v) for k, v in (settings.get("groups") or {}).items()}
        if settings.get("file"):
            path = Path(settings["file"])
            try:
                with path.open(newline="") as handle:
                    for row in csv.DictReader(handle):
                        target = (
                            users
                            if row["kind"] == "user"
                            else groups
                            if row["kind"] == "group"
                            else None
                        )
                        if target is None:
                            raise ConfigError(
                                f"{path}: kind must be user or group, got {row['kind']!r}"
                            )
                        target[row["source_id"]] = row["atlan_name"]
            except OSError as exc:
                raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
            except KeyError as exc:
                raise ConfigError(f"{path}: missing column {exc}") from None
        unmapped = settings.get("unmapped", "keep")
        if unmapped not in ("keep", "drop"):
            raise ConfigError("unmapped must be keep or drop")
        if not users and not groups:
            raise ConfigError("needs users, groups or file")
        return {"users": users, "groups": groups, "drop": unmapped == "drop"}

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
