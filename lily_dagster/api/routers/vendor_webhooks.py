"""`POST /v1/webhooks/{vendor}/{tenant}` (CONTRACT.md §4): a vendor's own payload (Atlan,
Monte Carlo, Slack, Teams), verified by its signature and normalised to envelopes."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from lily_dagster.api.dependencies import (
    State,
    Target,
    Tenant,
    VendorCall,
    audited,
    rate_limit,
    vendor_target,
)
from lily_dagster.lib.access.decision import Action
from lily_dagster.lib.receiver.body import check_envelopes

router = APIRouter()


# One route here (an unknown vendor is 404 like any unknown path), documented as one
# operation per vendor (openapi.py).
@router.post(
    "/v1/webhooks/{vendor}/{tenant}",
    include_in_schema=False,
    dependencies=[
        Depends(audited(Action.WEBHOOK_INGEST)),
        Depends(vendor_target),
        Depends(rate_limit),
    ],
)
async def post_vendor(
    request: Request,
    tenant: Tenant,
    target: Target,
    call: VendorCall,
    state: State,
) -> Response:
    """A vendor's own payload (Atlan, Monte Carlo, Slack, Teams), verified by its signature."""
    target.vendor.verify(call)
    request.state.audit_sub = f"vendor:{target.vendor.name}"
    result = target.vendor.normalise(call)
    for envelope in result.envelopes:
        envelope["tenant"] = tenant
    checked = check_envelopes(
        result.envelopes, tenant, target.vendor.name, state.settings.max_event_bytes, single=False
    )
    summary = await state.store(tenant, checked)
    if result.reply is not None:
        return JSONResponse(result.reply, status_code=200)
    summary["ignored"] = result.ignored
    return JSONResponse(summary, status_code=202)
