"""Atlas's error responses: `{"errorCode": ..., "errorMessage": ...}` with Atlas's own codes.

pyatlan turns a non-2xx answer into its exception class by HTTP status (400 InvalidRequestError,
401 AuthenticationError, 403 PermissionError, 404 NotFoundError, 429 RateLimitError) only when the
body carries both `errorCode` and `errorMessage`; otherwise it raises a bare AtlanError.
"""

from __future__ import annotations

from typing import Any


class AtlasError(Exception):
    """An answer the emulator refuses a request with, shaped like Atlas's AtlasBaseException."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"errorCode": self.code, "errorMessage": self.message}


def unknown_entity_type(type_name: str) -> AtlasError:
    # Atlas's TYPE_NAME_INVALID: a bulk upsert naming an unknown type is a 400, not a 404.
    return AtlasError(400, "ATLAS-400-00-014", f"Type ENTITY with name {type_name} does not exist")


def missing_qualified_name(type_name: str) -> AtlasError:
    return AtlasError(
        400, "ATLAS-400-00-073", f"Mandatory qualifiedName attribute is missing in type {type_name}"
    )


def missing_attribute(type_name: str, attribute: str) -> AtlasError:
    return AtlasError(
        400, "ATLAS-400-00-02B", f"Mandatory field {type_name}.{attribute} has empty/null value"
    )


def bad_request(message: str) -> AtlasError:
    return AtlasError(400, "ATLAS-400-00-029", message)


def unknown_classification(type_name: str) -> AtlasError:
    return AtlasError(404, "ATLAS-404-00-008", f"Given classification {type_name} was invalid")


def referenced_entity_not_found(type_name: str, key: str, value: str) -> AtlasError:
    if key == "guid":
        ref = f"AtlasObjectId{{guid='{value}', typeName='{type_name}'}}"
    else:
        ref = f"AtlasObjectId{{typeName='{type_name}', uniqueAttributes={{{key}='{value}'}}}}"
    return AtlasError(404, "ATLAS-404-00-00A", f"Referenced entity {ref} is not found")


def guid_not_found(guid: str) -> AtlasError:
    return AtlasError(404, "ATLAS-404-00-005", f"Given instance guid {guid} is invalid/not found")


def unique_attribute_not_found(type_name: str, qualified_name: str) -> AtlasError:
    return AtlasError(
        404,
        "ATLAS-404-00-009",
        f"Instance {type_name} with unique attribute {{qualifiedName={qualified_name}}} "
        "does not exist",
    )


def typedef_not_found(name: str) -> AtlasError:
    return AtlasError(404, "ATLAS-404-00-001", f"Given typename {name} was invalid")


def unauthenticated() -> AtlasError:
    return AtlasError(401, "ATLAS-401-00-001", "Authentication required: a valid API token")


def revoked_token() -> AtlasError:
    return AtlasError(
        403, "ATLAS-403-00-001", "API token is not authorized to perform this request: revoked"
    )


def rate_limited(limit_per_min: int) -> AtlasError:
    return AtlasError(
        429, "ATLAS-429-00-001", f"Rate limit exceeded: {limit_per_min} requests per minute"
    )


def injected(status: int) -> AtlasError:
    return AtlasError(status, f"ATLAS-{status}-00-001", f"Emulated failure (HTTP {status})")
