"""Atlan webhooks: `x-atlan-signing-secret` header, pyatlan's `AtlanEvent` shapes.

ENTITY_CREATE / ENTITY_UPDATE become upserts of the entity, ENTITY_DELETE a delete,
CLASSIFICATION_ADD / _DELETE partial changes of the asset's classifications, and
BUSINESS_ATTRIBUTE_UPDATE a partial change setting `custom_metadata.<set>` attributes.
Atlan's validation ping (`{"atlan-webhook": ...}`) is answered 200 and stores nothing.
"""

from __future__ import annotations

import time
from typing import Any

from lily_dagster.lib.receiver.body import parse_json_body
from lily_dagster.lib.receiver.signing import bad_signature, body_id, rfc3339_from_ms, same
from lily_dagster.lib.receiver.vendors import VendorRequest, VendorResult, register_vendor

# Atlan attribute -> envelope well-known attribute
_WELL_KNOWN = {
    "description": "description",
    "ownerUsers": "owner_users",
    "ownerGroups": "owner_groups",
    "certificateStatus": "certificate_status",
}
_PARENT_KEYS = (
    "tableQualifiedName",
    "viewQualifiedName",
    "schemaQualifiedName",
    "databaseQualifiedName",
)
_SKIP = {"qualifiedName", "name", "inputs", "outputs", *_WELL_KNOWN, *_PARENT_KEYS}


def _qualified_names(refs: Any) -> list[str]:
    out = []
    for ref in refs or []:
        if isinstance(ref, dict):
            unique = ref.get("uniqueAttributes") or ref.get("attributes") or {}
            if isinstance(unique.get("qualifiedName"), str):
                out.append(unique["qualifiedName"])
    return out


def _asset(entity: dict[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = entity.get("attributes") or {}
    qualified_name = attrs.get("qualifiedName")
    attributes: dict[str, Any] = {
        target: attrs[source]
        for source, target in _WELL_KNOWN.items()
        if attrs.get(source) is not None
    }
    if "description" not in attributes and isinstance(attrs.get("userDescription"), str):
        attributes["description"] = attrs["userDescription"]
    parent = next((attrs[k] for k in _PARENT_KEYS if isinstance(attrs.get(k), str)), None)
    if parent:
        attributes["parent_qualified_name"] = parent
    for key, value in attrs.items():
        if (
            key not in _SKIP
            and key != "userDescription"
            and isinstance(value, str | int | float | bool)
        ):
            attributes[key] = value
    if entity.get("guid"):
        attributes["atlan_guid"] = entity["guid"]
    classifications = entity.get("classificationNames")
    if not isinstance(classifications, list):
        classifications = [
            c.get("typeName") for c in entity.get("classifications") or [] if isinstance(c, dict)
        ]
    asset: dict[str, Any] = {
        "type_name": entity.get("typeName"),
        "qualified_name": qualified_name,
        "name": attrs.get("name")
        or (qualified_name.rsplit("/", 1)[-1] if isinstance(qualified_name, str) else None),
        "attributes": attributes,
        "classifications": [c for c in classifications if isinstance(c, str)],
    }
    if entity.get("typeName") == "Process":
        asset["inputs"] = _qualified_names(attrs.get("inputs"))
        asset["outputs"] = _qualified_names(attrs.get("outputs"))
    return asset


def _tag_names(details: Any) -> list[str]:
    return [
        d["typeName"]
        for d in details or []
        if isinstance(d, dict) and isinstance(d.get("typeName"), str)
    ]


@register_vendor("atlan")
class AtlanWebhook:
    name = "atlan"
    content_types = ("application/json",)
    signature_headers = ("x-atlan-signing-secret",)
    answers = (200, 202)  # 200: the reply to Atlan's validation ping

    def verify(self, request: VendorRequest) -> None:
        if not same(request.headers.get("x-atlan-signing-secret"), request.config.secret()):
            raise bad_signature("x-atlan-signing-secret does not match")

    def normalise(self, request: VendorRequest) -> VendorResult:
        data = parse_json_body(request.body)
        if isinstance(data, dict) and "atlan-webhook" in data:
            return VendorResult(reply={"status": "ok"})  # Atlan's validation ping
        events = data if isinstance(data, list) else [data]
        result = VendorResult()
        for index, event in enumerate(events):
            message = (
                (event.get("message") or event.get("payload")) if isinstance(event, dict) else None
            )
            if not isinstance(message, dict):
                result.ignored.append(f"item {index}: no message")
                continue
            operation = message.get("operationType")
            entity = message.get("entity") or {}
            asset = _asset(entity)
            envelope: dict[str, Any] = {
                "event_id": body_id("atlan", request.body, index),
                "source": "atlan",
                "op": "delete" if operation == "ENTITY_DELETE" else "upsert",
                "event_time": rfc3339_from_ms(
                    message.get("eventTime") or event.get("msgCreationTime"), time.time()
                ),
                "asset": asset,
            }
            if operation in ("CLASSIFICATION_ADD", "CLASSIFICATION_DELETE"):
                key = (
                    "add_classifications"
                    if operation == "CLASSIFICATION_ADD"
                    else "remove_classifications"
                )
                asset["attributes"] = {
                    "lily_patch": {key: _tag_names(message.get("mutatedDetails"))}
                }
            elif operation == "BUSINESS_ATTRIBUTE_UPDATE":
                details = message.get("mutatedDetails") or {}
                asset["attributes"] = {
                    "lily_patch": {"set": {f"custom_metadata.{k}": v for k, v in details.items()}}
                }
            elif operation not in ("ENTITY_CREATE", "ENTITY_UPDATE", "ENTITY_DELETE"):
                result.ignored.append(f"item {index}: operation {operation!r} not supported")
                continue
            result.envelopes.append(envelope)
        return result
