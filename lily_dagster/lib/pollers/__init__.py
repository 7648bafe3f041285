"""Polled sources: APIs Lily asks for changes on a schedule, cursor-based.

A poller is one module in this package (or a third-party package registering through the
`lily_dagster.pollers` entry point group) that decorates a `Poller` with `@register_poller`.
Each registered poller gets its own Dagster sensor (`<name>_poll_sensor`), which keeps a
cursor per tenant and lands what it polls through the same path as Kafka and webhooks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from lily_dagster.lib.registry import Registry
from lily_dagster.settings import PollerConfig


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

    def poll(self, tenant: str, config: PollerConfig, cursor: str | None) -> PollResult: ...


_REGISTRY: Registry[Poller] = Registry("poller", "lily_dagster.lib.pollers", "lily_dagster.pollers")
register_poller = _REGISTRY.register
get_poller = _REGISTRY.get
poller_names = _REGISTRY.names
