"""The emulator's HTTP surface: Atlan's /api/meta routes pyatlan calls and the /_emulator admin
routes tests use (see the package docstring for both)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atlan_emulator import errors
from atlan_emulator.control import Controls, Fault
from atlan_emulator.errors import AtlasError
from atlan_emulator.search import narrowing, run_search
from atlan_emulator.store import Store, UpsertOptions
from atlan_emulator.typedefs import CATEGORIES, find_typedef, typedefs_response

JsonBody = Annotated[dict[str, Any], Body()]
API_PREFIX = "/api/"


def _error_response(error: AtlasError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


class ApiGate:
    """ASGI middleware in front of every /api/ request, in the order a gateway would apply
    them: count it, injected fault, rate limit, API key. A trailing slash (pyatlan sends
    `entity/bulk/`, `types/typedefs/`) is dropped so one route serves both spellings."""

    def __init__(self, app: ASGIApp, controls: Controls) -> None:
        self.app = app
        self.controls = controls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/")
            scope = {**scope, "path": path}
        if not path.startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return

        controls = self.controls
        controls.count_request(path)

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                controls.count_status(message["status"])
            await send(message)

        fault = controls.take_fault(path)
        if fault is not None:
            if fault.delay_s > 0:
                await asyncio.sleep(fault.delay_s)
            if fault.status is not None:
                response = _error_response(
                    errors.injected(fault.status), fault.retry_after_header()
                )
                await response(scope, receive, counting_send)
                return
        limited = controls.admit()
        if limited is not None:
            limit, retry_after = limited
            response = _error_response(
                errors.rate_limited(limit), {"Retry-After": str(retry_after)}
            )
            await response(scope, receive, counting_send)
            return
        refusal = controls.check_key(dict(scope["headers"]).get(b"authorization"))
        if refusal is not None:
            # On 403 pyatlan's default Retry retries (403 is in its status_forcelist): one
            # second apart it gives up in ~5 s rather than backing off for about a minute.
            headers = {"Retry-After": "1"} if refusal.status == 403 else None
            await _error_response(refusal, headers)(scope, receive, counting_send)
            return
        await self.app(scope, receive, counting_send)


class FaultSpec(BaseModel):
    status: int | None = Field(default=None, ge=400, le=599)
    count: int = Field(default=1, ge=0)  # 0: clear every pending fault
    retry_after: float | None = Field(default=None, ge=0)
    delay_s: float = Field(default=0.0, ge=0)
    path_prefix: str | None = None


class ConfigSpec(BaseModel):
    rate_limit_per_min: int | None = Field(default=None, ge=1)


class TagsSpec(BaseModel):
    names: list[str]


def create_app(
    api_key: str, state_path: str | None = None, rate_limit_per_min: int | None = None
) -> FastAPI:
    """The emulator app. The store opens here, so a bad or locked --state file fails before
    the server binds; it closes when the server shuts down."""
    if not api_key:
        raise ValueError("the Atlan emulator needs a non-empty API key")
    store = Store(state_path)
    controls = Controls(api_key, rate_limit_per_min)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()

    app = FastAPI(title="Lily Atlan emulator", lifespan=lifespan, openapi_url=None)
    app.add_middleware(ApiGate, controls=controls)

    @app.exception_handler(AtlasError)
    async def atlas_error(_: Request, exc: AtlasError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error_response(errors.bad_request(f"{where}: {first.get('msg', 'invalid')}"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error_response(
            AtlasError(exc.status_code, f"ATLAS-{exc.status_code}-00-000", str(exc.detail))
        )

    # -- Atlan API ----------------------------------------------------------------------------
    # Plain `def` handlers run on the thread pool; the store's lock serialises writes.

    @app.post("/api/meta/entity/bulk")
    def upsert_entities(
        body: JsonBody,
        replace_classifications: Annotated[bool, Query(alias="replaceClassifications")] = False,
        replace_tags: Annotated[bool, Query(alias="replaceTags")] = False,
        append_tags: Annotated[bool, Query(alias="appendTags")] = False,
        replace_cm: Annotated[bool, Query(alias="replaceBusinessAttributes")] = False,
        overwrite_cm: Annotated[bool, Query(alias="overwriteBusinessAttributes")] = False,
    ) -> dict[str, Any]:
        entities = body.get("entities")
        if isinstance(entities, list):
            controls.count_bulk_entities(len(entities))
        options = UpsertOptions(
            replace_classifications=replace_classifications or replace_tags,
            append_classifications=append_tags,
            replace_business_attributes=replace_cm or overwrite_cm,
        )
        return store.upsert(entities, options)

    @app.delete("/api/meta/entity/bulk")
    def delete_entities(
        guid: Annotated[list[str], Query()] = [],  # noqa: B006 - FastAPI copies defaults
        delete_type: Annotated[str, Query(alias="deleteType")] = "SOFT",
    ) -> dict[str, Any]:
        return store.delete(guid, delete_type.upper())

    @app.get("/api/meta/entity/guid/{guid}")
    def get_by_guid(
        guid: str, ignore_relationships: Annotated[bool, Query(alias="ignoreRelationships")] = False
    ) -> dict[str, Any]:
        entity = store.get_by_guid(guid)
        return {"entity": entity.entity_json(not ignore_relationships), "referredEntities": {}}

    @app.get("/api/meta/entity/uniqueAttribute/type/{type_name}")
    def get_by_unique_attribute(
        type_name: str,
        qualified_name: Annotated[str | None, Query(alias="attr:qualifiedName")] = None,
        ignore_relationships: Annotated[bool, Query(alias="ignoreRelationships")] = False,
    ) -> dict[str, Any]:
        if not qualified_name:
            raise errors.bad_request("attr:qualifiedName is required")
        entity = store.get_by_unique_attribute(type_name, qualified_name)
        return {"entity": entity.entity_json(not ignore_relationships), "referredEntities": {}}

    @app.post("/api/meta/search/indexsearch")
    def index_search(body: JsonBody) -> dict[str, Any]:
        dsl = body.get("dsl")
        narrow = narrowing(dsl)
        candidates = store.snapshot() if narrow is None else store.lookup(*narrow)
        count, page = run_search(candidates, dsl)
        attributes = [a for a in body.get("attributes") or [] if isinstance(a, str)]
        with_tags = not body.get("excludeClassifications", False)
        result: dict[str, Any] = {"queryType": "INDEX", "approximateCount": count}
        if page:  # Atlan leaves `entities` out of an empty page
            result["entities"] = [e.search_json(attributes, with_tags) for e in page]
        return result

    @app.get("/api/meta/types/typedefs")
    def get_typedefs(
        type_: Annotated[list[str], Query(alias="type")] = [],  # noqa: B006 - FastAPI copies it
    ) -> dict[str, Any]:
        categories = {t.upper() for t in type_}
        unknown = categories - set(CATEGORIES)
        if unknown:
            raise errors.bad_request(f"Type Category {sorted(unknown)[0]} is invalid")
        return typedefs_response(categories, store.tags())

    @app.get("/api/meta/types/typedef/name/{name}")
    def get_typedef(name: str) -> dict[str, Any]:
        typedef = find_typedef(name, store.tags())
        if typedef is None:
            raise errors.typedef_not_found(name)
        return typedef

    # -- admin --------------------------------------------------------------------------------

    @app.get("/_emulator/health")
    def health() -> dict[str, Any]:
        return {"ok": True}

    @app.post("/_emulator/faults")
    def add_fault(spec: FaultSpec) -> dict[str, Any]:
        if spec.count == 0:
            controls.clear_faults()
            return {"pending_faults": []}
        if spec.status is None and spec.delay_s == 0:
            raise errors.bad_request("a fault needs a status, a delay_s, or both")
        # Paths are matched without their trailing slash, as ApiGate routes them.
        prefix = (spec.path_prefix.rstrip("/") or "/") if spec.path_prefix else None
        pending = controls.add_fault(
            Fault(spec.status, spec.count, spec.retry_after, spec.delay_s, prefix)
        )
        return {"pending_faults": pending}

    @app.post("/_emulator/config")
    def configure(spec: ConfigSpec) -> dict[str, Any]:
        controls.set_rate_limit(spec.rate_limit_per_min)
        return {"rate_limit_per_min": spec.rate_limit_per_min}

    @app.post("/_emulator/tags")
    def add_tags(spec: TagsSpec) -> dict[str, Any]:
        tags = store.add_tags(spec.names)
        return {"tags": {t.display_name: t.name for t in tags}}

    @app.post("/_emulator/revoke")
    def revoke() -> dict[str, Any]:
        controls.revoke()
        return {"revoked": True}

    @app.post("/_emulator/reset")
    def reset() -> dict[str, Any]:
        store.reset()
        controls.reset()
        return {"reset": True}

    @app.get("/_emulator/stats")
    def stats() -> dict[str, Any]:
        return {**controls.stats(), "entities": store.count()}

    @app.get("/_emulator/entities")
    def entities() -> list[dict[str, Any]]:
        stored = sorted(store.snapshot(), key=lambda e: (e.create_time, e.guid))
        return [e.to_json() for e in stored]

    return app
