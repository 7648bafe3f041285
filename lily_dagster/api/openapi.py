"""The receiver's OpenAPI document, exact: every route with its path parameters' patterns, its
request bodies, every status it can answer with that status's body and headers.

The routes (`routers/`) take their parameters from `request.path_params`, through their
dependencies (dependencies.py), so FastAPI adds no parameters and no 422 of its own: what
the document says comes from here. Rules that JSON Schema cannot state (an envelope's
`event_time` within [2000-01-01, now + 1 day], its `parent_qualified_name` a prefix of its
qualified name, its size, its tenant equal to the path's) are in the descriptions.
`lily_dagster_tests/webhook/test_openapi_conformance.py` runs schemathesis against the live
receiver with this document.
"""

from __future__ import annotations

import inspect
from typing import Any

from lily_dagster.api.openapi_access import component_schemas
from lily_dagster.lib.envelope import WELL_KNOWN_ATTRIBUTES
from lily_dagster.lib.receiver.body import MAX_EVENTS_PER_REQUEST
from lily_dagster.lib.receiver.vendors import get_vendor, vendor_names
from lily_dagster.lib.validation import (
    MAX_EVENT_ID_CHARS,
    MAX_NAME_CHARS,
    MAX_QUALIFIED_NAME_CHARS,
    QUALIFIED_NAME_SEGMENTS,
    TYPE_NAME_PATTERN,
)
from lily_dagster.settings import TENANT_PATTERN

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
# What `GET /metrics` sends: the Prometheus text exposition format, version 0.0.4.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BEARER_SCHEME = "bearer"

# The characters the validation rules strip before "is it empty" (Unicode White_Space, as
# Rust's str::trim in polars): a field with none but these is empty.
_WHITE_SPACE = (
    "\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
)
NOT_BLANK_PATTERN = f"[^{_WHITE_SPACE}]"
# Envelope.event_time as the decoder reads it (lib/envelope.py).
RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _strings() -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string"}}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _qualified_name_rules() -> list[dict[str, Any]]:
    """A SQL asset's qualified name has its type's number of segments, from `default/`."""
    return [
        {
            "if": {
                "properties": {"type_name": {"const": type_name}},
                "required": ["type_name"],
            },
            "then": {
                "properties": {
                    "qualified_name": {"pattern": f"^default(/[^/]*){{{segments - 1}}}$"}
                }
            },
        }
        for type_name, segments in QUALIFIED_NAME_SEGMENTS.items()
    ]


# The well-known attributes that hold lists of strings (the others hold a string).
STRING_LIST_ATTRIBUTES = ("owner_users", "owner_groups", "glossary_terms")


def _attribute_schema(key: str) -> dict[str, Any]:
    return _strings() if key in STRING_LIST_ATTRIBUTES else {"type": "string"}


def _envelope_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": (
            "One metadata event (CONTRACT.md §1). Unknown top-level keys are ignored. "
            "Also checked, beyond this schema: `event_time` between 2000-01-01 and now "
            "+ 1 day; `tenant` is the path's tenant (else the whole request is refused: "
            "403 `tenant_mismatch`); the event is at most LILY_MAX_EVENT_BYTES (1 MiB) "
            "as compact JSON."
        ),
        "required": ["event_id", "tenant", "source", "op", "event_time", "asset"],
        "properties": {
            "event_id": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_EVENT_ID_CHARS,
                "pattern": NOT_BLANK_PATTERN,
                "description": "Unique per event: the idempotency key.",
            },
            "tenant": {"type": "string", "pattern": TENANT_PATTERN},
            "source": {"type": "string", "description": "The producer system."},
            "op": {"type": "string", "enum": ["upsert", "delete"]},
            "event_time": {
                "type": "string",
                "format": "date-time",
                "pattern": RFC3339_PATTERN,
                "description": "RFC 3339 with a time zone: when the change happened.",
            },
            "asset": _ref("Asset"),
        },
    }


def _asset_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": (
            "An Atlan asset. For the SQL types (Connection … Column) the qualified name "
            "has the type's segments and `attributes.parent_qualified_name`, when given, "
            "is a prefix of it (checked beyond this schema)."
        ),
        "required": ["type_name", "qualified_name", "name"],
        "properties": {
            "type_name": {"type": "string", "pattern": TYPE_NAME_PATTERN},
            "qualified_name": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_QUALIFIED_NAME_CHARS,
                "pattern": NOT_BLANK_PATTERN,
            },
            "name": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_NAME_CHARS,
                "pattern": NOT_BLANK_PATTERN,
            },
            "attributes": _ref("AssetAttributes"),
            "classifications": _strings(),
            "inputs": {**_strings(), "description": "Process: qualified names it reads."},
            "outputs": {**_strings(), "description": "Process: qualified names it writes."},
        },
        "allOf": _qualified_name_rules(),
    }


def _attribute_schemas() -> dict[str, Any]:
    """`AssetAttributes`, and `AssetPatch`, a partial change of them."""
    return {
        "AssetAttributes": {
            "type": "object",
            "description": "Free-form; the well-known keys are typed, others kept as given.",
            "properties": {
                **{key: _nullable(_attribute_schema(key)) for key in WELL_KNOWN_ATTRIBUTES},
                "lily_patch": _nullable(_ref("AssetPatch")),
            },
        },
        "AssetPatch": {
            "type": "object",
            "description": "A partial change: only what it names changes.",
            "additionalProperties": False,
            "properties": {
                "set": {
                    "type": "object",
                    "properties": {key: _attribute_schema(key) for key in WELL_KNOWN_ATTRIBUTES},
                },
                "add_classifications": _strings(),
                "remove_classifications": _strings(),
            },
        },
    }


def _envelope_schemas() -> dict[str, Any]:
    return {
        "Envelope": _envelope_schema(),
        "Asset": _asset_schema(),
        **_attribute_schemas(),
        "EventsBody": {
            "oneOf": [
                _ref("Envelope"),
                {
                    "type": "array",
                    "maxItems": MAX_EVENTS_PER_REQUEST,
                    "description": (
                        "Envelopes; an item that is not a valid envelope is listed in the "
                        "answer's `rejected` and kept in the tenant's quarantine."
                    ),
                    "items": {"anyOf": [_ref("Envelope"), {}]},
                },
            ]
        },
    }


_REJECTED_EVENT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["index", "event_id", "reason", "detail", "pointer"],
    "properties": {
        "index": {"type": "integer", "minimum": 0},
        "event_id": {"type": ["string", "null"]},
        "reason": {"type": "string", "description": "A quarantine reason code."},
        "detail": {"type": "string"},
        "pointer": {"type": "string", "description": "JSON pointer to the bad field."},
    },
}
_SUMMARY_PROPERTIES: dict[str, Any] = {
    "accepted": {
        "type": "array",
        "items": {"type": "string"},
        "description": "Event ids committed to the inbox.",
    },
    "duplicates": {
        "type": "integer",
        "minimum": 0,
        "description": "Accepted events whose id the inbox already held (stored once).",
    },
    "rejected": {"type": "array", "items": _REJECTED_EVENT},
}


def _component_schemas() -> dict[str, Any]:
    return {
        "Error": {
            "type": "object",
            "additionalProperties": False,
            "required": ["error", "detail"],
            "properties": {
                "error": {"type": "string", "description": "A short code, e.g. `too_large`."},
                "detail": {"type": "string"},
                "pointer": {
                    "type": "string",
                    "description": "400 for a body: JSON pointer to the bad part.",
                },
            },
        },
        "EventsAccepted": {
            "type": "object",
            "additionalProperties": False,
            "required": list(_SUMMARY_PROPERTIES),
            "properties": _SUMMARY_PROPERTIES,
        },
        "VendorAccepted": {
            "type": "object",
            "additionalProperties": False,
            "required": [*_SUMMARY_PROPERTIES, "ignored"],
            "properties": {
                **_SUMMARY_PROPERTIES,
                "ignored": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Payload items understood but not turned into events.",
                },
            },
        },
        "VendorReply": {
            "type": "object",
            "description": (
                "What the vendor shows or expects back: Slack `{response_type, text}`, "
                "Teams `{type, text}`, Atlan's validation ping `{status}`."
            ),
            "additionalProperties": {"type": "string"},
        },
        "Health": {
            "type": "object",
            "additionalProperties": False,
            "required": ["status", "inbox_position"],
            "properties": {
                "status": {"const": "ok"},
                "inbox_position": {
                    "type": ["string", "null"],
                    "description": "The newest inbox position written (its form is the inbox's).",
                },
            },
        },
        **_envelope_schemas(),
        **component_schemas(),
    }


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {JSON: {"schema": _ref("Error")}}}
    if headers:
        out["headers"] = headers
    return out


_RETRY_AFTER = {
    "Retry-After": {
        "required": True,
        "description": "Seconds until the tenant's rate allows another request.",
        "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"},
    }
}
_WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "required": True,
        "description": "The bearer challenge.",
        "schema": {"type": "string", "pattern": "^Bearer "},
    }
}


def _tenant_parameter() -> dict[str, Any]:
    return {
        "name": "tenant",
        "in": "path",
        "required": True,
        "description": "The tenant; another form answers 400 `bad_tenant`.",
        "schema": {"type": "string", "pattern": TENANT_PATTERN},
        "example": "acme",
    }


def events_operation() -> dict[str, Any]:
    """`openapi_extra` of `POST /v1/tenants/{tenant}/events`."""
    return {
        "parameters": [_tenant_parameter()],
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": _ref("EventsBody")}},
        },
        "security": [{BEARER_SCHEME: []}],
        "responses": {
            "202": {
                "description": "Every accepted event is committed to the inbox.",
                "content": {JSON: {"schema": _ref("EventsAccepted")}},
            },
            "400": _error(
                "Malformed: a bad tenant in the path, a body that is not JSON or neither "
                "an envelope nor an array, or a single envelope that is invalid (`error` "
                "is its quarantine reason, `pointer` the bad field)."
            ),
            "401": _error("No, or a bad, bearer token.", _WWW_AUTHENTICATE),
            "403": _error(
                "The token lacks scope `lily:ingest` or does not name the tenant, or an "
                "event names another tenant (`tenant_mismatch`)."
            ),
            "413": _error(
                f"Body over LILY_WEBHOOK_MAX_BODY_BYTES, or over {MAX_EVENTS_PER_REQUEST:,} events."
            ),
            "415": _error("Content-Type is not application/json."),
            "429": _error("Over the tenant's request rate.", _RETRY_AFTER),
        },
    }


def _signature_scheme(vendor: str, header: str) -> str:
    return f"{vendor}.{header}"


def vendor_security_schemes() -> dict[str, Any]:
    """Each vendor's signature headers, as API keys in headers (a request lacking one or
    carrying a wrong one is 401)."""
    return {
        _signature_scheme(name, header): {
            "type": "apiKey",
            "in": "header",
            "name": header,
            "description": f"Part of {name}'s own signature scheme (see the operation).",
        }
        for name in vendor_names()
        for header in getattr(get_vendor(name), "signature_headers", ())
    }


def vendor_operation(name: str) -> dict[str, Any]:
    """`POST /v1/webhooks/<name>/{tenant}`: one operation per registered vendor, so that
    each states its own content type, signature and answers."""
    vendor = get_vendor(name)
    assert vendor is not None, name
    module = inspect.getmodule(type(vendor))
    bodies = {
        JSON: {"schema": {"description": f"{name}'s JSON payload, as it sends it."}},
        FORM: {
            "schema": {
                "type": "object",
                "description": f"{name}'s form fields.",
                "additionalProperties": {"type": "string"},
            }
        },
    }
    successes = {
        200: {
            "description": "The reply the vendor expects (or shows to its user).",
            "content": {JSON: {"schema": _ref("VendorReply")}},
        },
        202: {
            "description": "Every accepted event is committed to the inbox.",
            "content": {JSON: {"schema": _ref("VendorAccepted")}},
        },
    }
    answers = getattr(vendor, "answers", (200, 202))
    json_body = JSON in vendor.content_types
    signature = getattr(vendor, "signature_headers", ())
    return {
        "summary": f"{name} webhook",
        "description": ((module.__doc__ if module else None) or "").strip(),
        "operationId": f"post_{name.replace('-', '_')}_webhook",
        "parameters": [_tenant_parameter()],
        "requestBody": {
            "required": True,
            "content": {t: bodies.get(t, {"schema": {}}) for t in vendor.content_types},
        },
        **(
            {"security": [{_signature_scheme(name, h): [] for h in signature}]} if signature else {}
        ),
        "responses": {
            **{str(status): successes[status] for status in answers},
            "400": _error(
                "A bad tenant in the path" + (", or a body that is not JSON." if json_body else ".")
            ),
            "401": _error(
                f"{name} webhooks are not configured for the tenant, or the signature is "
                "missing, wrong, stale or replayed."
            ),
            "413": _error(
                f"Body over LILY_WEBHOOK_MAX_BODY_BYTES, or over {MAX_EVENTS_PER_REQUEST:,} events."
            ),
            "415": _error(f"Not {' or '.join(vendor.content_types)}."),
            "429": _error("Over the tenant's request rate.", _RETRY_AFTER),
        },
    }


def healthz_operation() -> dict[str, Any]:
    return {
        "responses": {
            "200": {"description": "Alive.", "content": {JSON: {"schema": _ref("Health")}}}
        }
    }


def metrics_operation() -> dict[str, Any]:
    return {
        "responses": {
            "200": {
                "description": "Prometheus text exposition format, version 0.0.4.",
                "content": {METRICS_CONTENT_TYPE: {"schema": {"type": "string"}}},
            }
        }
    }


def finish(document: dict[str, Any]) -> dict[str, Any]:
    """The document FastAPI made from the routes, completed: components, security scheme,
    and `GET /openapi.json` itself."""
    components = document.setdefault("components", {})
    components.setdefault("schemas", {}).update(_component_schemas())
    components["securitySchemes"] = {
        BEARER_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": (
                "OAuth2 access token (HS256, RS256/ES256 from the issuer's JWKS): `exp` "
                "required, `aud` (default `lily`) and `iss` checked; scopes (claim `scope`: "
                "`lily:ingest`, `lily:read`, `lily:read:pii`, `lily:audit`), the tenant "
                "(claim `tenant`, or a `tenants` list) and optionally `groups`."
            ),
        },
        **vendor_security_schemes(),
    }
    # The vendor route is one in the app (an unknown vendor is 404 like any unknown path)
    # and one operation per vendor here.
    for name in vendor_names():
        document["paths"][f"/v1/webhooks/{name}/{{tenant}}"] = {"post": vendor_operation(name)}
    document["paths"]["/openapi.json"] = {
        "get": {
            "summary": "This document",
            "operationId": "openapi",
            "responses": {
                "200": {
                    "description": "The OpenAPI document.",
                    "content": {JSON: {"schema": {"type": "object"}}},
                }
            },
        }
    }
    return document
