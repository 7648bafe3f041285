"""Polled sources: APIs Lily asks for changes on a schedule, cursor-based.

A poller is one module in this package (or a third-party package registering through the
`lily_dagster.pollers` entry point group) that decorates a `Poller` with `@register_poller`
and declares its per-tenant options as `Options` (a `PluginOptions`), validated at load.
Each registered poller gets its own Dagster sensor (`<name>_poll_sensor`), which keeps a
cursor per tenant and lands what it polls through the same path as Kafka and webhooks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from lily_dagster.lib.plugins import PluginOptions as PluginOptions
from lily_dagster.lib.plugins import registry
from lily_dagster.settings import ConfigError, LilyConfigFile, PollerConfig


class PollError(RuntimeError):
    """The source could not be polled this time; the cursor stays where it was."""


@dataclass
class PollResult:
    envelopes: list[dict[str, Any]] = field(default_factory=list)
    cursor: str | None = None  # where the next poll starts; None: unchanged


class Poller(Protocol):
    name: str
    # Seconds between polls (the sensor's minimum interval).
    interval_s: int

    def poll(self, tenant: str, options: Any, cursor: str | None) -> PollResult:
        """Changes since `cursor`; `options` is the tenant's, as the poller's `Options`."""
        ...


_REGISTRY = registry("poller", "lily_dagster.lib.pollers", "lily_dagster.pollers")
register_poller = _REGISTRY.register
get_poller = _REGISTRY.find
poller_names = _REGISTRY.names


def poller_options(name: str, config: PollerConfig) -> PluginOptions:
    """A tenant's options of poller `name`, validated (ConfigError naming the poller)."""
    options: PluginOptions = _REGISTRY.options(name, config.model_extra)
    return options


def check_poller_config(config: LilyConfigFile) -> None:
    """Every tenant's pollers exist and their options are valid (at definitions load)."""
    for tenant in config.tenants:
        for name, poller_config in tenant.pollers.items():
            try:
                poller_options(name, poller_config)
            except ConfigError as exc:
                raise ConfigError(f"tenant {tenant.name!r}: {exc}") from None
