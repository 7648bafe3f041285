"""Hub backends. Each is one module under this package that registers itself with
`register_hub`; `open_hub` imports the chosen one only when asked, so a backend's heavy
dependencies (pyatlan) are never loaded at definitions load."""

from __future__ import annotations

import importlib

from lily_dagster.lib.hub.base import MetadataHub, hub_factory
from lily_dagster.settings import ConfigError, Settings


def open_hub(settings: Settings) -> MetadataHub:
    try:
        importlib.import_module(f"lily_dagster.lib.hub.{settings.hub}")
    except ModuleNotFoundError as exc:
        if exc.name != f"lily_dagster.lib.hub.{settings.hub}":
            raise
    try:
        factory = hub_factory(settings.hub)
    except ValueError as exc:
        raise ConfigError(f"LILY_HUB={settings.hub}: {exc}") from None
    return factory.from_settings(settings)
