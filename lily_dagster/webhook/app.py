"""The webhook receiver (CONTRACT.md §4): FastAPI on uvicorn, thin over lib/webhooks."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster.lib.webhooks.auth import AuthConfig, TokenVerifier, authorise
from lily_dagster.lib.webhooks.errors import RequestRejectedError
from lily_dagster.lib.webhooks.inbox import Inbox, open_inbox
from lily_dagster.lib.webhooks.receiver import (
    CheckedBody,
    RateLimiter,
    check_envelopes,
    parse_json_body,
    quarantine_rejects,
)
from lily_dagster.lib.webhooks.vendors import VendorRequest, get_vendor, vendor_names
from lily_dagster.settings import ConfigError, LilyConfigFile, Settings, is_tenant
from lily_dagster.webhook import openapi as doc

INGEST_SOURCE = "tenants-api"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lily_webhook_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.accepted = Counter(
            "lily_webhook_events_accepted",
            "Events stored in the inbox",
            ["tenant", "source"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "lily_webhook_events_duplicate",
            "Events whose event_id the inbox already held",
            ["tenant"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "lily_webhook_rejected",
            "Refused requests and rejected events by reason",
            ["reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "lily_webhook_request_seconds",
            "Request latency",
            ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.inbox_depth = Gauge(
            "lily_webhook_inbox_depth",
            "Inbox events not yet landed by the inbox sensor",
            registry=self.registry,
        )


@dataclass
class ReceiverState:
    settings: Settings
    config: LilyConfigFile
    verifier: TokenVerifier
    inbox: Inbox
    quarantine: QuarantineStore
    limiter: RateLimiter
    metrics: Metrics


def _error(exc: RequestRejectedError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


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


def require_content_type(request: Request, allowed: tuple[str, ...]) -> None:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in allowed:
        raise RequestRejectedError(
            415,
            "unsupported_media_type",
            f"content type {content_type or 'none'!r}; expected {' or '.join(allowed)}",
        )


def require_tenant(tenant: str) -> None:
    if not is_tenant(tenant):
        raise RequestRejectedError(
            400, "bad_tenant", "tenant must match ^[a-z0-9][a-z0-9-]{0,62}$", pointer=""
        )


async def store(state: ReceiverState, tenant: str, checked: CheckedBody) -> dict[str, Any]:
    """Quarantine the rejected events, commit the valid ones, and say which were which."""
    quarantine_rejects(state.quarantine, tenant, checked)
    for rejected in checked.rejected:
        state.metrics.rejected.labels(rejected["reason"]).inc()
    result = await asyncio.wrap_future(state.inbox.append(checked.valid))
    source = checked.valid[0].source if checked.valid else INGEST_SOURCE
    state.metrics.accepted.labels(tenant, source).inc(result.stored)
    state.metrics.duplicates.labels(tenant).inc(result.duplicates)
    return {
        "accepted": [e.event_id for e in checked.valid],
        "duplicates": result.duplicates,
        "rejected": checked.rejected,
    }


def check_vendor_config(config: LilyConfigFile) -> None:
    """Every configured vendor exists and its secret variable is set: fail at start, not
    on the vendor's first request."""
    for tenant in config.tenants:
        for vendor, vendor_config in tenant.webhooks.items():
            if get_vendor(vendor) is None:
                raise ConfigError(
                    f"tenant {tenant.name}: no webhook vendor {vendor!r}; known: {vendor_names()}"
                )
            vendor_config.secret()


def create_app(
    settings: Settings, inbox: Inbox | None = None, auth: AuthConfig | None = None
) -> FastAPI:
    import os

    from lily_dagster.lib.webhooks.auth import auth_config_from_env

    config = settings.config
    check_vendor_config(config)
    state = ReceiverState(
        settings=settings,
        config=config,
        verifier=TokenVerifier(auth or auth_config_from_env(dict(os.environ))),
        inbox=inbox or open_inbox(settings),
        quarantine=QuarantineStore(settings.quarantine_dir),
        limiter=RateLimiter(
            settings.webhook_rate_per_s,
            {t.name: t.webhook_rate_per_s for t in config.tenants if t.webhook_rate_per_s},
        ),
        metrics=Metrics(),
    )
    app = FastAPI(
        title="Lily webhook receiver",
        version="1",
        description="Metadata events into Lily (CONTRACT.md §4).",
        docs_url=None,
        redoc_url=None,
    )
    app.state.receiver = state
    app.openapi_schema = None

    # The routes read their path parameters from the request: the OpenAPI document declares
    # them (webhook/openapi.py), and FastAPI adds no validation or 422 of its own.
    @app.post(
        "/v1/tenants/{tenant}/events",
        status_code=202,
        operation_id="post_events",
        openapi_extra=doc.events_operation(),
    )
    async def post_events(request: Request) -> Response:
        """Envelopes (one or an array) for `tenant`; 202 once every accepted event is stored."""
        tenant: str = request.path_params["tenant"]
        require_tenant(tenant)
        principal = state.verifier.verify(request.headers.get("authorization"))
        authorise(principal, tenant)
        state.limiter.acquire(tenant)
        require_content_type(request, ("application/json",))
        body = await read_body(request, settings.webhook_max_body_bytes)
        parsed = parse_json_body(body)
        if isinstance(parsed, dict):
            items, single = [parsed], True
        elif isinstance(parsed, list):
            items, single = parsed, False
        else:
            raise RequestRejectedError(
                400, "malformed_json", "body must be an envelope or an array of them", pointer=""
            )
        checked = check_envelopes(items, tenant, INGEST_SOURCE, settings.max_event_bytes, single)
        summary = await store(state, tenant, checked)
        if single and checked.rejected:
            first = checked.rejected[0]
            return JSONResponse(
                {"error": first["reason"], "detail": first["detail"], "pointer": first["pointer"]},
                status_code=400,
            )
        return JSONResponse(summary, status_code=202)

    # Documented as one operation per vendor (webhook/openapi.py).
    @app.post("/v1/webhooks/{vendor}/{tenant}", include_in_schema=False)
    async def post_vendor(request: Request) -> Response:
        """A vendor's own payload (Atlan, Monte Carlo, Slack, Teams), verified by its signature."""
        vendor: str = request.path_params["vendor"]
        tenant: str = request.path_params["tenant"]
        require_tenant(tenant)
        handler = get_vendor(vendor)
        if handler is None:
            raise RequestRejectedError(
                404, "unknown_vendor", f"no vendor {vendor!r}; known: {vendor_names()}"
            )
        tenant_config = state.config.tenant(tenant)
        vendor_config = tenant_config.webhooks.get(vendor) if tenant_config else None
        if vendor_config is None:
            # Same answer as a bad signature: an unconfigured pair reveals nothing.
            raise RequestRejectedError(
                401, "unauthenticated", f"{vendor} webhooks are not configured for this tenant"
            )
        state.limiter.acquire(tenant)
        require_content_type(request, handler.content_types)
        body = await read_body(request, settings.webhook_max_body_bytes)
        vendor_request = VendorRequest(
            tenant=tenant,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            config=vendor_config,
            received_at=time.time(),
        )
        handler.verify(vendor_request)
        result = handler.normalise(vendor_request)
        for envelope in result.envelopes:
            envelope["tenant"] = tenant
        checked = check_envelopes(
            result.envelopes, tenant, vendor, settings.max_event_bytes, single=False
        )
        summary = await store(state, tenant, checked)
        if result.reply is not None:
            return JSONResponse(result.reply, status_code=200)
        summary["ignored"] = result.ignored
        return JSONResponse(summary, status_code=202)

    @app.get(
        "/healthz",
        operation_id="healthz",
        response_model=None,
        openapi_extra=doc.healthz_operation(),
    )
    async def healthz() -> dict[str, Any]:
        """Liveness and the inbox position."""
        return {"status": "ok", "inbox_position": state.inbox.position()}

    @app.get(
        "/metrics",
        operation_id="metrics",
        response_class=Response,
        openapi_extra=doc.metrics_operation(),
    )
    async def metrics() -> Response:
        """Prometheus text format."""
        state.metrics.inbox_depth.set(state.inbox.pending(state.inbox.consumer_cursor()))
        return Response(
            generate_latest(state.metrics.registry), media_type=doc.METRICS_CONTENT_TYPE
        )

    @app.exception_handler(RequestRejectedError)
    async def rejected(_: Request, exc: RequestRejectedError) -> JSONResponse:
        state.metrics.rejected.labels(str(exc.code)).inc()
        return _error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        # A 405 keeps Starlette's `Allow` header (the methods the path takes).
        return JSONResponse(
            {"error": code, "detail": str(exc.detail)},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            {"error": "malformed_request", "detail": str(exc.errors()[:1])}, status_code=400
        )

    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        return doc.finish(original_openapi())

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(RequestMetrics, metrics=state.metrics)
    return app


class RequestMetrics:
    """Counts and times every request (pure ASGI: no per-request task or body copy)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        endpoint = (
            "tenant_events"
            if path.startswith("/v1/tenants/")
            else "vendor_webhook"
            if path.startswith("/v1/webhooks/")
            else path
            if path in ("/healthz", "/metrics", "/openapi.json")
            else "other"
        )
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
