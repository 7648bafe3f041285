"""`POST /v1/tenants/{tenant}/events` (CONTRACT.md §4): envelopes under a bearer token."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from lily_dagster.api import openapi as doc
from lily_dagster.api.dependencies import (
    JsonBody,
    State,
    Tenant,
    audited,
    rate_limit,
    require,
)
from lily_dagster.api.state import INGEST_SOURCE
from lily_dagster.lib.access.decision import Action
from lily_dagster.lib.receiver.body import check_envelopes, parse_json_body
from lily_dagster.lib.receiver.errors import RequestRejectedError

router = APIRouter()


# The path parameter is read by the dependencies: the OpenAPI document declares it
# (openapi.py), and FastAPI adds no validation or 422 of its own.
@router.post(
    "/v1/tenants/{tenant}/events",
    status_code=202,
    operation_id="post_events",
    openapi_extra=doc.events_operation(),
    dependencies=[
        Depends(audited(Action.EVENTS_INGEST)),
        Depends(require(Action.EVENTS_INGEST)),
        Depends(rate_limit),
    ],
)
async def post_events(tenant: Tenant, state: State, body: JsonBody) -> Response:
    """Envelopes (one or an array) for `tenant`; 202 once every accepted event is stored."""
    parsed = parse_json_body(body)
    if isinstance(parsed, dict):
        items, single = [parsed], True
    elif isinstance(parsed, list):
        items, single = parsed, False
    else:
        raise RequestRejectedError(
            400, "malformed_json", "body must be an envelope or an array of them", pointer=""
        )
    checked = check_envelopes(items, tenant, INGEST_SOURCE, state.settings.max_event_bytes, single)
    summary = await state.store(tenant, checked)
    if single and checked.rejected:
        first = checked.rejected[0]
        return JSONResponse(
            {"error": first["reason"], "detail": first["detail"], "pointer": first["pointer"]},
            status_code=400,
        )
    return JSONResponse(summary, status_code=202)
