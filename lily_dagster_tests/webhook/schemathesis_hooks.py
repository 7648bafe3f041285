"""Schemathesis hooks for test_openapi_conformance.py (loaded by `st run` through
SCHEMATHESIS_HOOKS): real credentials, and the few rules JSON Schema cannot state.

- `/v1/tenants/{tenant}/...`: a bearer token (HS256, LILY_JWT_HS256_SECRET) with every
  scope, naming the tenant of each generated path. Positive cases of the record routes ask
  for a record `seed_records` stored, and carry no cursor (only a page issues one).
- Vendor webhooks: positive cases go to the tenant the vendors are configured for and carry
  the vendor's real signature over the exact bytes sent (the secrets come from the
  environment, as the receiver reads them); negative cases keep the generated, wrong ones.
- Envelopes get what the document states but JSON Schema cannot (align_envelope).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import requests
import schemathesis

from lily_dagster.api.openapi import RFC3339_PATTERN
from lily_dagster.lib.validation import EARLIEST_EVENT_TIME, MAX_FUTURE, QUALIFIED_NAME_SEGMENTS
from lily_dagster.settings import is_tenant

EVENTS_PATH = "/v1/tenants/{tenant}/events"
TENANT_PATH_REGEX = r"^/v1/tenants/\{tenant\}/"
RECORD_PATHS = (
    "/v1/tenants/{tenant}/assets/{qualified_name}",
    "/v1/tenants/{tenant}/lineage/{qualified_name}",
)
SEEDED = "default/snowflake/1/DB/SCH/ORDERS"
VENDOR_PATH_REGEX = r"^/v1/webhooks/[^/]+/\{tenant\}$"
VENDOR_TENANT = "acme"  # the tenant configured with every vendor (vendor_setup.py)
FALLBACK_EVENT_TIME = "2026-01-01T00:00:00Z"


def _positive(case: schemathesis.Case) -> bool:
    meta = case.meta
    return meta is not None and meta.generation.mode.is_positive


def _headers(case: schemathesis.Case) -> dict[str, Any]:
    if case.headers is None:
        case.headers = {}
    return case.headers


def seed_records(home: Path) -> None:
    """A record for tenant acme, with its lineage, for the record routes to find."""
    from lily_dagster.lib.hub.local import LocalHub
    from lily_dagster_tests.support.envelopes import ev
    from lily_dagster_tests.support.frames import frame

    process = ev("p", "default/dbt/1/orders", 2, type_name="Process", inputs=[SEEDED], outputs=[])
    LocalHub(home / "hub").upsert(VENDOR_TENANT, frame([ev("t", SEEDED, 1), process]))


@schemathesis.auth(refresh_interval=None).apply_to(path_regex=TENANT_PATH_REGEX)
class TenantToken:
    def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> str:
        now = int(time.time())
        claims = {
            "sub": "schemathesis",
            "aud": "lily",
            "iat": now,
            "exp": now + 600,
            "scope": "lily:ingest lily:read lily:read:pii lily:audit",
            # map_case may move a positive case to the seeded tenant after this is made.
            "tenants": [str((case.path_parameters or {}).get("tenant", "")), VENDOR_TENANT],
        }
        return jwt.encode(claims, os.environ["LILY_JWT_HS256_SECRET"], algorithm="HS256")

    def set(self, case: schemathesis.Case, data: str, ctx: schemathesis.AuthContext) -> None:
        _headers(case)["Authorization"] = f"Bearer {data}"


def _sent_body(case: schemathesis.Case) -> bytes:
    """The body bytes the requests transport will send for this case."""
    kwargs = case.as_transport_kwargs()
    prepared = requests.Request(
        method=kwargs["method"],
        url=kwargs["url"],
        headers=kwargs.get("headers"),
        data=kwargs.get("data"),
        json=kwargs.get("json"),
    ).prepare()
    body = prepared.body
    return body.encode() if isinstance(body, str) else (body or b"")


def _hmac(key: bytes, message: bytes, algorithm: str) -> bytes:
    return hmac.new(key, message, getattr(hashlib, algorithm)).digest()


def vendor_signature(vendor: str, body: bytes) -> dict[str, str]:
    """The headers `vendor` signs `body` with (vendor_setup.py's secrets)."""
    if vendor == "atlan":
        return {"x-atlan-signing-secret": os.environ["TEST_ATLAN_SECRET"]}
    if vendor == "monte-carlo":
        key = os.environ["TEST_MC_SECRET"].encode()
        return {"x-mcd-signature": _hmac(key, body, "sha512").hex()}
    if vendor == "slack":
        timestamp = str(int(time.time()))
        base = b"v0:" + timestamp.encode() + b":" + body
        signature = _hmac(os.environ["TEST_SLACK_SECRET"].encode(), base, "sha256").hex()
        return {"x-slack-request-timestamp": timestamp, "x-slack-signature": f"v0={signature}"}
    if vendor == "teams":
        key = base64.b64decode(os.environ["TEST_TEAMS_SECRET"])
        return {"Authorization": "HMAC " + base64.b64encode(_hmac(key, body, "sha256")).decode()}
    raise AssertionError(f"no signer for vendor {vendor!r}")


@schemathesis.auth(refresh_interval=None).apply_to(path_regex=VENDOR_PATH_REGEX)
class VendorSignature:
    def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> str:
        return case.operation.path.split("/")[3]

    def set(self, case: schemathesis.Case, data: str, ctx: schemathesis.AuthContext) -> None:
        if _positive(case):
            _headers(case).update(vendor_signature(data, _sent_body(case)))


def _well_formed_time(value: Any) -> datetime | None:
    """`value` read as the document's `event_time` (RFC 3339 with a zone), else None."""
    if not isinstance(value, str) or not re.fullmatch(RFC3339_PATTERN, value):
        return None
    try:
        return datetime.fromisoformat(value.upper())
    except ValueError:
        return None


def align_envelope(item: Any, tenant: str) -> None:
    """Give an envelope what the document states but JSON Schema cannot: its `tenant` is
    the path's, its `event_time` within [2000-01-01, now + 1 day], its SQL asset's
    `parent_qualified_name` a prefix of its qualified name (else null).

    Each change turns a value the schema accepts into another one it accepts; a value
    generated to break the schema stays as it is. Without them nearly every generated
    envelope, valid or not, would be refused for these rules alone."""
    if not isinstance(item, dict):
        return
    if isinstance(item.get("tenant"), str) and is_tenant(item["tenant"]):
        item["tenant"] = tenant
    when = _well_formed_time(item.get("event_time"))
    if when is not None and not (
        EARLIEST_EVENT_TIME <= when <= datetime.now(UTC) + MAX_FUTURE - timedelta(hours=1)
    ):
        item["event_time"] = FALLBACK_EVENT_TIME
    asset = item.get("asset")
    attributes = asset.get("attributes") if isinstance(asset, dict) else None
    if not isinstance(asset, dict) or not isinstance(attributes, dict):
        return
    parent = attributes.get("parent_qualified_name")
    name = asset.get("qualified_name")
    if (
        isinstance(parent, str)
        and asset.get("type_name") in QUALIFIED_NAME_SEGMENTS
        and not (isinstance(name, str) and name.startswith(parent + "/"))
    ):
        attributes["parent_qualified_name"] = None


@schemathesis.hook
def map_case(ctx: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    tenant = (case.path_parameters or {}).get("tenant")
    if case.operation.path == EVENTS_PATH and isinstance(tenant, str) and is_tenant(tenant):
        items = case.body if isinstance(case.body, list) else [case.body]
        for item in items:
            align_envelope(item, tenant)
    elif (
        case.operation.path.startswith("/v1/webhooks/") and case.path_parameters and _positive(case)
    ):
        case.path_parameters["tenant"] = VENDOR_TENANT
    elif case.operation.path in RECORD_PATHS and case.path_parameters and _positive(case):
        case.path_parameters.update(tenant=VENDOR_TENANT, qualified_name=SEEDED)
    if _positive(case) and case.query:
        case.query.pop("cursor", None)
    return case
