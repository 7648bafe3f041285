"""The receiver's routes, one module a route family. `create_app` includes `ROUTERS` in
this order (which is also the order of the OpenAPI document's paths); a new family is a new
module with an `APIRouter` named `router`, added here."""

from __future__ import annotations

from fastapi import APIRouter

from lily_dagster.api.routers import health, metadata, tenant_events, vendor_webhooks

ROUTERS: tuple[APIRouter, ...] = (
    tenant_events.router,
    metadata.router,
    vendor_webhooks.router,
    health.router,
)
