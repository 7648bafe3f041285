"""Vendor webhooks: each vendor is one module in this package (or a third-party package
registering through the `lily_dagster.webhook_vendors` entry point group) that decorates a
`Vendor` with `@register_vendor`. Nothing else needs editing to add one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from lily_dagster.lib.registry import Registry
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
    # Optional, for the OpenAPI document: `signature_headers: tuple[str, ...]`, the headers
    # its signature travels in (lower case), and `answers: tuple[int, ...]`, its success
    # statuses (200 with a reply, 202 with the stored events; default both).

    def verify(self, request: VendorRequest) -> None:
        """Raise RequestRejectedError (401) unless the vendor's signature is valid."""
        ...

    def normalise(self, request: VendorRequest) -> VendorResult:
        """The payload as envelopes of CONTRACT.md §1 (tenant set by the caller)."""
        ...


_REGISTRY: Registry[Vendor] = Registry(
    "webhook vendor", "lily_dagster.lib.webhooks.vendors", "lily_dagster.webhook_vendors"
)
register_vendor = _REGISTRY.register
get_vendor = _REGISTRY.get
vendor_names = _REGISTRY.names
