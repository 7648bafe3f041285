"""Every error the receiver answers has the body `{"error": code, "detail": text}`
(CONTRACT.md §4), whether a route refused the request or the framework did."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lily_dagster.lib.receiver.errors import RequestRejectedError


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestRejectedError)
    async def rejected(request: Request, exc: RequestRejectedError) -> JSONResponse:
        request.app.state.receiver.metrics.rejected.labels(str(exc.code)).inc()
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

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
