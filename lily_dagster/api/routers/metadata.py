"""The metadata access API (CONTRACT.md §6): a tenant's records, lineage, change feed and
audit log, read back under a bearer token, its tenant and scopes, the access policies and
PII redaction.

The record routes answer from an in-memory snapshot of the tenant (lib/access/snapshot.py),
so a read never holds the hub's file against the run writing it. They run on the event loop
(microseconds of work each) and go to the thread pool only to refresh a snapshot; the
change and audit routes read files, on the thread pool.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any

import polars as pl
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from lily_dagster.api import openapi_access as doc
from lily_dagster.api.dependencies import State, Tenant, audited, bearer_principal, require
from lily_dagster.api.params import Query
from lily_dagster.lib.access import queries
from lily_dagster.lib.access.cursor import BadCursorError
from lily_dagster.lib.access.decision import PII_SCOPE, Action, Principal
from lily_dagster.lib.access.policy import AccessPolicy, Visibility
from lily_dagster.lib.access.redaction import redact
from lily_dagster.lib.access.snapshot import HubBusyError, Snapshot
from lily_dagster.lib.hub.base import record_to_export, records_to_export
from lily_dagster.lib.hub.local import HubLockedError
from lily_dagster.lib.receiver.errors import RequestRejectedError

router = APIRouter()
Caller = Annotated[Principal, Depends(bearer_principal)]  # verified once per request

_LIST_PARAMS = ("type_name", "status", "classification", "qualified_name_prefix", "q")
_STATUSES = ("ACTIVE", "DELETED")
MAX_DEPTH = 10


def _checks(action: Action) -> list[Any]:
    return [Depends(audited(action)), Depends(require(action))]


def _not_found(detail: str) -> RequestRejectedError:
    return RequestRejectedError(404, "not_found", detail)


async def _snapshot(state: State, tenant: str) -> Snapshot:
    fresh = state.snapshots.fresh(tenant)
    if fresh is not None:
        return fresh
    try:
        return await run_in_threadpool(state.snapshots.get, tenant)
    except HubBusyError as exc:
        raise _busy(str(exc)) from None


def _busy(detail: str) -> RequestRejectedError:
    return RequestRejectedError(503, "hub_busy", detail, headers={"Retry-After": "1"})


@functools.lru_cache(maxsize=1024)
def _visibility(policies: tuple[AccessPolicy, ...], groups: frozenset[str]) -> Visibility:
    return Visibility(policies, groups)


def _view(state: State, tenant: str, caller: Principal) -> Visibility:
    return _visibility(state.config.policies_of(tenant), caller.groups)


def _exported(
    records: pl.DataFrame | list[dict[str, Any]],
    caller: Principal,
    snapshot: Snapshot,
    view: Visibility,
) -> list[dict[str, Any]]:
    """Records (a frame, or stored rows) as the caller may see them: redacted without the
    PII scope, and a Process's inputs and outputs without the names the policies hide."""
    if isinstance(records, pl.DataFrame):
        out = records_to_export(records)
    else:
        out = [record_to_export(row) for row in records]
    if not view.unrestricted:
        refs = sorted({n for r in out for n in (*r.get("inputs", ()), *r.get("outputs", ()))})
        shown = queries.visible_names(snapshot, refs, view)
        for r in out:
            if "inputs" in r:
                r["inputs"] = [n for n in r["inputs"] if n in shown]
                r["outputs"] = [n for n in r["outputs"] if n in shown]
    return out if PII_SCOPE in caller.scopes else [redact(r) for r in out]


def _checked_name(qualified_name: str) -> str:
    """A qualified name from the path; one that could never be a record's is 404."""
    if "\x00" in qualified_name or ".." in qualified_name.split("/") or not qualified_name:
        raise _not_found("no such record")
    return qualified_name


@router.get(
    "/v1/tenants/{tenant}/assets",
    operation_id="list_assets",
    openapi_extra=doc.list_assets_operation(),
    dependencies=_checks(Action.ASSETS_LIST),
)
async def list_assets(
    request: Request, tenant: Tenant, state: State, caller: Caller
) -> JSONResponse:
    """A page of the tenant's records, in qualified-name order."""
    query = Query(request.query_params, (*_LIST_PARAMS, "limit", "cursor"))
    where = queries.AssetFilter(
        **{
            name: query.text(name, _STATUSES if name == "status" else None) for name in _LIST_PARAMS
        },
        search_sensitive=PII_SCOPE in caller.scopes,
    )
    limit = query.limit()
    cursor = query.text("cursor")
    try:
        after = state.cursors.decode(tenant, cursor) if cursor else None
    except BadCursorError as exc:
        raise RequestRejectedError(400, "bad_cursor", str(exc), pointer="/query/cursor") from None
    snapshot, view = await _snapshot(state, tenant), _view(state, tenant, caller)
    page, more = queries.list_assets(snapshot, where, view, after, limit)
    assets = _exported(page, caller, snapshot, view)
    last = assets[-1]["qualified_name"] if more and assets else None
    return JSONResponse(
        {"assets": assets, "next_cursor": state.cursors.encode(tenant, last) if last else None}
    )


@router.get(
    "/v1/tenants/{tenant}/assets/{qualified_name:path}",
    operation_id="get_asset",
    openapi_extra=doc.get_asset_operation(),
    dependencies=_checks(Action.ASSETS_GET),
)
async def get_asset(
    request: Request, tenant: Tenant, qualified_name: str, state: State, caller: Caller
) -> JSONResponse:
    """One record by qualified name (URL-encoded as one segment, or as the rest of the path)."""
    Query(request.query_params, ())
    name = _checked_name(qualified_name)
    snapshot, view = await _snapshot(state, tenant), _view(state, tenant, caller)
    found = queries.get_asset(snapshot, name, view)
    if found is None:
        if snapshot.row(name) is not None:
            request.state.audit_decision = "deny"  # hidden by a policy: as if absent
        raise _not_found(f"tenant {tenant!r} has no record {name!r}")
    return JSONResponse(_exported([found], caller, snapshot, view)[0])


@router.get(
    "/v1/tenants/{tenant}/lineage/{qualified_name:path}",
    operation_id="get_lineage",
    openapi_extra=doc.lineage_operation(),
    dependencies=_checks(Action.LINEAGE_READ),
)
async def get_lineage(
    request: Request, tenant: Tenant, qualified_name: str, state: State, caller: Caller
) -> JSONResponse:
    """The records up or down `depth` Process hops from one record, and the edges crossed."""
    query = Query(request.query_params, ("direction", "depth"))
    direction = query.text("direction", ("upstream", "downstream")) or "downstream"
    depth = query.integer("depth", 1, 1, MAX_DEPTH)
    name = _checked_name(qualified_name)
    snapshot, view = await _snapshot(state, tenant), _view(state, tenant, caller)
    way: queries.Direction = "upstream" if direction == "upstream" else "downstream"
    found = queries.lineage(snapshot, name, way, depth, view)
    if found is None:
        raise _not_found(f"tenant {tenant!r} has no record {name!r}")
    nodes, edges = found
    return JSONResponse({"nodes": _exported(nodes, caller, snapshot, view), "edges": edges})


@router.get(
    "/v1/tenants/{tenant}/changes",
    operation_id="list_changes",
    openapi_extra=doc.changes_operation(),
    dependencies=_checks(Action.CHANGES_READ),
)
def list_changes(request: Request, tenant: Tenant, state: State, caller: Caller) -> JSONResponse:
    """The tenant's change log after position `since`."""
    query = Query(request.query_params, ("since", "limit"))
    since = query.position("since")
    limit = query.limit()
    try:
        changes, next_since = queries.changes_page(
            state.snapshots.reader, tenant, since, limit, _view(state, tenant, caller)
        )
    except HubLockedError as exc:
        raise _busy(str(exc)) from None
    if PII_SCOPE not in caller.scopes:
        changes = [redact(c) for c in changes]
    return JSONResponse({"changes": changes, "next_since": next_since})


@router.get(
    "/v1/tenants/{tenant}/audit",
    operation_id="list_audit",
    openapi_extra=doc.audit_operation(),
    dependencies=_checks(Action.AUDIT_READ),
)
def list_audit(request: Request, tenant: Tenant, state: State) -> JSONResponse:
    """The tenant's audit log after position `since`."""
    query = Query(request.query_params, ("since", "limit"))
    since = query.position("since")
    limit = query.limit()
    entries = state.audit.log.read(tenant, since=since, limit=limit)
    next_since = entries[-1]["seq"] if entries else since
    return JSONResponse({"entries": entries, "next_since": next_since})
