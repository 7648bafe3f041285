"""The OpenAPI operations and schemas of the metadata access API (CONTRACT.md §6), merged
into the receiver's document by openapi.py's `finish`."""

from __future__ import annotations

from typing import Any

from lily_dagster.settings import TENANT_PATTERN

JSON = "application/json"
BEARER_SCHEME = "bearer"
MAX_LIMIT = 1000
MAX_DEPTH = 10


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref("Error")}}}


def _path(name: str, description: str, pattern: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "minLength": 1}
    if pattern:
        schema["pattern"] = pattern
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


_TENANT = _path("tenant", "The tenant; another form answers 400 `bad_tenant`.", TENANT_PATTERN)
_NAME = {
    **_path(
        "qualified_name",
        "A record's qualified name, URL-encoded as one segment or as the rest of the path.",
    ),
    "example": "default/snowflake/1700000000/DB/SCH/ORDERS",
}
_LIMIT = _query(
    "limit", "Page size.", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100}
)
_SINCE = _query(
    "since",
    "Answer the entries after this position.",
    {"type": "integer", "minimum": 0, "maximum": 2**63 - 1, "default": 0},
)
_STRING = {"type": "string", "minLength": 1}


def _operation(
    summary: str, scope: str, parameters: list[dict[str, Any]], body: str, not_found: bool = False
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": summary, "content": {JSON: {"schema": _ref(body)}}},
        "400": _error(
            "A bad tenant, or a bad or unknown query parameter (`bad_parameter`, `pointer` "
            "`/query/<name>`), or a cursor this server did not issue for this tenant "
            "(`bad_cursor`)."
        ),
        "401": _error("No, or a bad, bearer token."),
        "403": _error(f"The token lacks scope `{scope}` or does not name the tenant."),
        "503": _error("The tenant's store is held by a writer and not yet read (`hub_busy`)."),
    }
    if not_found:
        responses["404"] = _error(
            "No such record, or one the access policies hide from the caller."
        )
    return {
        "summary": summary,
        "parameters": parameters,
        "security": [{BEARER_SCHEME: []}],
        "responses": responses,
    }


def list_assets_operation() -> dict[str, Any]:
    filters = [
        _query("type_name", "Only records of this type.", _STRING),
        _query("status", "Only records with this status.", {"enum": ["ACTIVE", "DELETED"]}),
        _query("classification", "Only records with this classification.", _STRING),
        _query("qualified_name_prefix", "Only qualified names starting with this.", _STRING),
        _query("q", "Case-insensitive substring of the name or the description.", _STRING),
        _LIMIT,
        _query("cursor", "`next_cursor` of the previous page.", _STRING),
    ]
    return _operation(
        "A page of records, by qualified name", "lily:read", [_TENANT, *filters], "AssetPage"
    )


def get_asset_operation() -> dict[str, Any]:
    return _operation("One record", "lily:read", [_TENANT, _NAME], "HubRecord", not_found=True)


def lineage_operation() -> dict[str, Any]:
    parameters = [
        _TENANT,
        _NAME,
        _query(
            "direction",
            "Which way to follow Process records.",
            {"enum": ["upstream", "downstream"], "default": "downstream"},
        ),
        _query(
            "depth",
            "How many Process hops.",
            {"type": "integer", "minimum": 1, "maximum": MAX_DEPTH, "default": 1},
        ),
    ]
    return _operation("Lineage around a record", "lily:read", parameters, "Lineage", not_found=True)


def changes_operation() -> dict[str, Any]:
    return _operation("The change feed", "lily:read", [_TENANT, _SINCE, _LIMIT], "ChangePage")


def audit_operation() -> dict[str, Any]:
    return _operation("The audit log", "lily:audit", [_TENANT, _SINCE, _LIMIT], "AuditPage")


_STRINGS = {"type": "array", "items": {"type": "string"}}
_TIME = {"type": ["string", "null"], "format": "date-time"}


def component_schemas() -> dict[str, Any]:
    record = {
        "type": "object",
        "description": "A hub export record (§2); PII redacted without `lily:read:pii`.",
        "required": [
            "qualified_name",
            "type_name",
            "name",
            "status",
            "attributes",
            "classifications",
            "event_time",
            "event_id",
            "updated_at",
        ],
        "properties": {
            "qualified_name": {"type": "string"},
            "type_name": {"type": "string"},
            "name": {"type": "string"},
            "status": {"enum": ["ACTIVE", "DELETED"]},
            "attributes": {"type": "object"},
            "classifications": _STRINGS,
            "event_time": _TIME,
            "event_id": {"type": "string"},
            "updated_at": _TIME,
            "inputs": _STRINGS,
            "outputs": _STRINGS,
        },
    }
    change = {
        "type": "object",
        "required": ["seq", "qualified_name", "type_name", "change", "version"],
        "properties": {
            "seq": {"type": "integer"},
            "qualified_name": {"type": "string"},
            "type_name": {"type": "string"},
            "change": {"enum": ["created", "updated", "archived", "restored"]},
            "version": {"type": "integer"},
            "name": {"type": ["string", "null"]},
            "status": {"type": "string"},
            "attributes": {"type": "object"},
            "classifications": _STRINGS,
            "changed_at": _TIME,
        },
    }
    entry = {
        "type": "object",
        "required": [
            "seq",
            "time",
            "sub",
            "action",
            "resource",
            "decision",
            "status",
            "prev_hash",
            "hash",
        ],
        "properties": {
            "seq": {"type": "integer"},
            "time": {"type": "string"},
            "sub": {"type": "string"},
            "action": {"type": "string"},
            "resource": {"type": "string"},
            "decision": {"enum": ["allow", "deny"]},
            "status": {"type": ["integer", "string"]},
            "prev_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        },
    }
    edge = {
        "type": "object",
        "required": ["process", "from", "to"],
        "properties": {
            "process": {"type": "string"},
            "from": {"type": "string"},
            "to": {"type": "string"},
        },
    }
    return {
        "HubRecord": record,
        "AssetPage": _page(
            "assets", _ref("HubRecord"), "next_cursor", {"type": ["string", "null"]}
        ),
        "Lineage": {
            "type": "object",
            "required": ["nodes", "edges"],
            "properties": {
                "nodes": {"type": "array", "items": _ref("HubRecord")},
                "edges": {"type": "array", "items": edge},
            },
        },
        "Change": change,
        "ChangePage": _page("changes", _ref("Change"), "next_since", {"type": "integer"}),
        "AuditEntry": entry,
        "AuditPage": _page("entries", _ref("AuditEntry"), "next_since", {"type": "integer"}),
    }


def _page(
    items: str, item: dict[str, Any], next_key: str, next_schema: dict[str, Any]
) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [items, next_key],
        "properties": {items: {"type": "array", "items": item}, next_key: next_schema},
    }
