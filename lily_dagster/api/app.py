"""The receiver's FastAPI app: its state, its routers, its error handlers, its metrics."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from lily_dagster.api import openapi as doc
from lily_dagster.api.audit import AuditTrail
from lily_dagster.api.errors import install_error_handlers
from lily_dagster.api.metrics import RequestMetrics
from lily_dagster.api.routers import ROUTERS
from lily_dagster.api.state import build_state
from lily_dagster.lib.audit import AuditWriter
from lily_dagster.lib.inbox import Inbox
from lily_dagster.lib.receiver.auth import AuthConfig
from lily_dagster.settings import Settings


def create_app(
    settings: Settings,
    inbox: Inbox | None = None,
    auth: AuthConfig | None = None,
    audit: AuditWriter | None = None,
) -> FastAPI:
    state = build_state(settings, inbox, auth, audit)
    app = FastAPI(
        title="Lily webhook receiver",
        version="1",
        description="Metadata events into Lily (CONTRACT.md §4) and metadata back out (§6).",
        docs_url=None,
        redoc_url=None,
    )
    app.state.receiver = state
    for router in ROUTERS:
        app.include_router(router)
    install_error_handlers(app)
    _complete_openapi(app)
    app.add_middleware(AuditTrail, writer=state.audit)
    app.add_middleware(RequestMetrics, metrics=state.metrics)
    return app


def _complete_openapi(app: FastAPI) -> None:
    """`GET /openapi.json` serves the document FastAPI makes, completed by openapi.py."""
    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        return doc.finish(original_openapi())

    app.openapi = openapi  # type: ignore[method-assign]
