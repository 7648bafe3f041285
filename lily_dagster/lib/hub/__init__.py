"""Hub backends. Each is one module under this package (or a third-party package, through
the `lily_dagster.hubs` entry point group) whose class registers itself with
`register_hub`. No backend imports its heavy dependencies (pyatlan) at module level, so
finding them all never loads those at definitions load."""

from __future__ import annotations

from lily_dagster.lib.hub.base import MetadataHub, hub_factory
from lily_dagster.settings import ConfigError, Settings


def open_hub(settings: Settings) -> MetadataHub:
    try:
        factory = hub_factory(settings.hub)
    except ConfigError as exc:
        raise ConfigError(f"LILY_HUB={settings.hub}: {exc}") from None
    return factory.from_settings(settings)
