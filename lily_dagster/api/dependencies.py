"""The receiver's FastAPI dependencies: its state, the path's tenant and its configuration,
the bearer token and its scope, the tenant's quota, the vendor, the body.

They read the request (`request.path_params`, headers) and declare no parameters, so
FastAPI adds nothing to the OpenAPI document (openapi.py states every parameter) and no
422 of its own. A route lists them in the order its checks answer: 400 bad tenant,
401/403 token (or 404/401 vendor), 429 quota, 415 content type, 413 size. Each runs once
per request however many others depend on it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from lily_dagster.api.state import ReceiverState
from lily_dagster.lib.access.decision import Action, Principal, decide
from lily_dagster.lib.receiver.errors import RequestRejectedError, forbidden
from lily_dagster.lib.receiver.vendors import Vendor, VendorRequest, get_vendor, vendor_names
from lily_dagster.settings import TenantConfig, VendorWebhookConfig, is_tenant

JSON = "application/json"


async def receiver_state(request: Request) -> ReceiverState:
    state: ReceiverState = request.app.state.receiver
    return state


State = Annotated[ReceiverState, Depends(receiver_state)]


async def path_tenant(request: Request) -> str:
    """The `{tenant}` of the path; 400 `bad_tenant` unless it is a tenant name."""
    tenant: str = request.path_params["tenant"]
    if not is_tenant(tenant):
        raise RequestRejectedError(
            400, "bad_tenant", "tenant must match ^[a-z0-9][a-z0-9-]{0,62}$", pointer=""
        )
    request.state.audit_tenant = tenant  # the audit entry goes to this tenant's log
    return tenant


Tenant = Annotated[str, Depends(path_tenant)]


async def tenant_config(tenant: Tenant, state: State) -> TenantConfig | None:
    """The tenant's entry in the LILY_CONFIG file, if it has one."""
    return state.config.tenant(tenant)


def audited(action: Action) -> Callable[..., Awaitable[None]]:
    """A route's first dependency: names its action in the audit entry (api/audit.py)."""

    async def note_action(request: Request) -> None:
        request.state.audit_action = action.value

    return note_action


async def bearer_principal(request: Request, state: State) -> Principal:
    """The verified bearer token; 401 when it is missing or bad."""
    principal = state.verifier.verify(request.headers.get("authorization"))
    request.state.audit_sub = principal.subject
    return principal


def require(action: Action) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the token, allowed by the policy decision point to take `action` on
    the path's tenant (403 with the reason when not)."""

    async def authorised(
        request: Request,
        tenant: Tenant,
        principal: Annotated[Principal, Depends(bearer_principal)],
    ) -> Principal:
        decision = decide(principal, action, tenant)
        request.state.audit_decision = decision.label
        if not decision.allowed:
            raise forbidden(decision.detail, code=decision.code)
        return principal

    return authorised


async def rate_limit(tenant: Tenant, state: State) -> None:
    """One request off the tenant's quota; 429 with `Retry-After` when it is spent."""
    state.limiter.acquire(tenant)


def require_content_type(request: Request, allowed: tuple[str, ...]) -> None:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in allowed:
        raise RequestRejectedError(
            415,
            "unsupported_media_type",
            f"content type {content_type or 'none'!r}; expected {' or '.join(allowed)}",
        )


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it exceeds `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestRejectedError(413, "too_large", f"body of {declared} bytes exceeds {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestRejectedError(413, "too_large", f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: Request, state: State) -> bytes:
    """The raw body of a JSON request (415 for another content type, 413 when too large)."""
    require_content_type(request, (JSON,))
    return await read_body(request, state.settings.webhook_max_body_bytes)


JsonBody = Annotated[bytes, Depends(json_body)]


@dataclass(frozen=True)
class VendorTarget:
    vendor: Vendor
    config: VendorWebhookConfig


async def vendor_target(
    request: Request, config: Annotated[TenantConfig | None, Depends(tenant_config)]
) -> VendorTarget:
    """The path's `{vendor}` (404 when unknown) and its configuration for the tenant (401
    when it has none: the same answer as a bad signature, so an unconfigured pair reveals
    nothing)."""
    name: str = request.path_params["vendor"]
    vendor = get_vendor(name)
    if vendor is None:
        raise RequestRejectedError(
            404, "unknown_vendor", f"no vendor {name!r}; known: {vendor_names()}"
        )
    vendor_config = config.webhooks.get(name) if config else None
    if vendor_config is None:
        raise RequestRejectedError(
            401, "unauthenticated", f"{name} webhooks are not configured for this tenant"
        )
    return VendorTarget(vendor, vendor_config)


Target = Annotated[VendorTarget, Depends(vendor_target)]


async def vendor_request(
    request: Request, tenant: Tenant, target: Target, state: State
) -> VendorRequest:
    """The vendor's request as its handler takes it: content type checked (415), body read
    (413). Its signature is not checked yet."""
    require_content_type(request, target.vendor.content_types)
    return VendorRequest(
        tenant=tenant,
        headers={k.lower(): v for k, v in request.headers.items()},
        body=await read_body(request, state.settings.webhook_max_body_bytes),
        config=target.config,
        received_at=time.time(),
    )


VendorCall = Annotated[VendorRequest, Depends(vendor_request)]
