"""Polled sources: APIs Lily asks for changes on a schedule, cursor-based.

A poller is one module in this package (or a third-party package registering through the
`lily_dagster.pollers` entry point group) that decorates a `Poller` with `@register_poller`.
Each registered poller gets its own Dagster sensor (`<name>_poll_sensor`), which keeps a
cursor per tenant and lands what it polls through the same path as Kafka and webhooks.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol

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


_POLLERS: dict[str, Poller] = {}
_loaded = False


def register_poller(name: str) -> Callable[[type[Any]], type[Any]]:
    def decorate(cls: type[Any]) -> type[Any]:
        instance = cls()
        instance.name = name
        _POLLERS[name] = instance
        return cls

    return decorate


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    for ep in entry_points(group="lily_dagster.pollers"):
        ep.load()
    _loaded = True


def get_poller(name: str) -> Poller | None:
    _load_all()
    return _POLLERS.get(name)


def poller_names() -> list[str]:
    _load_all()
    return sorted(_POLLERS)
