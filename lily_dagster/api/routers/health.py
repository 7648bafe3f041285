"""`GET /healthz` and `GET /metrics` (Prometheus text format)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import generate_latest

from lily_dagster.api import openapi as doc
from lily_dagster.api.dependencies import State

router = APIRouter()


@router.get(
    "/healthz",
    operation_id="healthz",
    response_model=None,
    openapi_extra=doc.healthz_operation(),
)
async def healthz(state: State) -> dict[str, Any]:
    """Liveness and the inbox position."""
    return {"status": "ok", "inbox_position": state.inbox.position()}


@router.get(
    "/metrics",
    operation_id="metrics",
    response_class=Response,
    openapi_extra=doc.metrics_operation(),
)
async def metrics(state: State) -> Response:
    """Prometheus text format."""
    state.metrics.inbox_depth.set(state.inbox.pending(state.inbox.consumer_cursor()))
    return Response(generate_latest(state.metrics.registry), media_type=doc.METRICS_CONTENT_TYPE)
