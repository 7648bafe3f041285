"""Vendor webhooks: each vendor is one module in this package (or a third-party package
registering through the `lily_dagster.webhook_vendors` entry point group) that decorates a
`Vendor` with `@register_vendor`. Nothing else needs editing to add one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from lily_dagster.lib.plugins import PluginOptions as PluginOptions
from lily_dagster.lib.plugins import registry
from lily_dagster.settings import ConfigError, LilyConfigFile, VendorWebhookConfig


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
    # Optional, for the OpenAPI document: `signature_headers: tuple[str, ...]`, the headers
    # its signature travels in (lower case), and `answers: tuple[int, ...]`, its success
    # statuses (200 with a reply, 202 with the stored events; default both).

    def verify(self, request: VendorRequest) -> None:
        """Raise RequestRejectedError (401) unless the vendor's signature is valid."""
        ...

    def normalise(self, request: VendorRequest) -> VendorResult:
        """The payload as envelopes of CONTRACT.md §1 (tenant set by the caller)."""
        ...


_REGISTRY = registry(
    "webhook vendor", "lily_dagster.lib.receiver.vendors", "lily_dagster.webhook_vendors"
)
register_vendor = _REGISTRY.register
get_vendor = _REGISTRY.find
vendor_names = _REGISTRY.names


def check_vendor_config(config: LilyConfigFile) -> None:
    """Every configured vendor exists and its secret variable is set: fail at start, not
    on the vendor's first request."""
    for tenant in config.tenants:
        for vendor, vendor_config in tenant.webhooks.items():
            if get_vendor(vendor) is None:
                raise ConfigError(
                    f"tenant {tenant.name}: no webhook vendor {vendor!r}; known: {vendor_names()}"
                )
            try:
                vendor_options(vendor, vendor_config)
            except ConfigError as exc:
                raise ConfigError(f"tenant {tenant.name}: {exc}") from None
            vendor_config.secret()


def vendor_options(name: str, config: VendorWebhookConfig) -> Any:
    """A tenant's options of vendor `name` (beside secret_env), as its `Options` model."""
    return _REGISTRY.options(name, config.model_extra)
