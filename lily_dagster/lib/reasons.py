"""Reason codes of quarantined events: stable strings that operators filter and replay by."""

from enum import StrEnum


class Reason(StrEnum):
    MALFORMED_JSON = "malformed_json"  # not JSON, not UTF-8, or not a JSON object
    MISSING_FIELD = "missing_field"  # a required envelope field is absent
    WRONG_TYPE = "wrong_type"  # a field has the wrong JSON type
    UNKNOWN_OP = "unknown_op"  # op is neither "upsert" nor "delete"
    BAD_EVENT_TIME = "bad_event_time"  # event_time is not RFC 3339 with a time zone
    OVERSIZED = "oversized"  # payload larger than LILY_MAX_EVENT_BYTES
    BAD_TENANT = "bad_tenant"  # tenant does not match ^[a-z0-9][a-z0-9-]{0,62}$
    TENANT_MISMATCH = "tenant_mismatch"  # tenant differs from the transport's binding
    EMPTY_FIELD = "empty_field"  # event_id, type_name, qualified_name or name is empty
    FIELD_TOO_LONG = "field_too_long"  # a name or identifier beyond its bound
    BAD_TYPE_NAME = "bad_type_name"  # type_name is not an Atlan type name (PascalCase)
    ORPHAN = "orphan"  # waited past LILY_ORPHAN_WAIT_S for a record (or parent) that never came
