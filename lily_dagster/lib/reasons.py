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
    HOOK_ERROR = "hook_error"  # a hook raised on this event (detail names the hook)
    HOOK_TIMEOUT = "hook_timeout"  # a hook gave no result within its timeout
    HOOK_BAD_OUTPUT = "hook_bad_output"  # a hook returned a frame of another schema
    BAD_LINEAGE = "bad_lineage"  # a Process without inputs or outputs
    BAD_QUALIFIED_NAME = "bad_qualified_name"  # qualified name not of its type's structure
    PARENT_MISMATCH = "parent_mismatch"  # parent_qualified_name is not a prefix of the name
    ORPHAN = "orphan"  # waited past LILY_ORPHAN_WAIT_S for a record (or parent) that never came
    HUB_REFUSED = "hub_refused"  # the hub (Atlan) refused the entity; detail is its error
    # an operator took its pending batch out of the pipeline (`lily batches discard`)
    DISCARDED_BY_OPERATOR = "discarded_by_operator"
