"""Vendor webhooks: each vendor is one module in this package (or a third-party package
registering through the `lily_dagster.webhook_vendors` entry point group) that decorates a
`Vendor` with `@register_vendor`. Nothing else needs editing to add one."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol

from lily_dagster.settings import VendorWebhookConfig


@dataclass(frozen=True)
class VendorRequest:
    tenant: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    config: VendorWebhookConfig
    received_at: float  # unix seconds, for replay windows


@dataclass
class VendorResult:
    envelopes: list[dict[str, Any]] = field(default_factory=list)
    # What the vendor expects back (Slack and Teams show it to the user), else None.
    reply: dict[str, Any] | None = None
    # Payload items understood but deliberately not turned into events, with why.
    ignored: list[str] = field(default_factory=list)


class Vendor(Protocol):
    name: str
    # Content types the vendor posts; anything else is 415.
    content_types: tuple[str, ...]

    def verify(self, request: VendorRequest) -> None:
        """Raise RequestRejectedError (401) unless the vendor's signature is valid."""
        ...

    def normalise(self, request: VendorRequest) -> VendorResult:
        """The payload as envelopes of CONTRACT.md §1 (tenant set by the caller)."""
        ...


_VENDORS: dict[str, Vendor] = {}
_loaded = False


def register_vendor(name: str) -> Callable[[type[Any]], type[Any]]:
    def decorate(cls: type[Any]) -> type[Any]:
        instance = cls()
        instance.name = name
        _VENDORS[name] = instance
        return cls

    return decorate


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    for ep in entry_points(group="lily_dagster.webhook_vendors"):
        ep.load()
    _loaded = True


def get_vendor(name: str) -> Vendor | None:
    _load_all()
    return _VENDORS.get(name)


def vendor_names() -> list[str]:
    _load_all()
    return sorted(_VENDORS)
