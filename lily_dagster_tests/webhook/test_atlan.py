"""Atlan webhooks built with pyatlan's own event models, serialised as pyatlan serialises them,
posted to a real receiver with Atlan's `x-atlan-signing-secret` header."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

# pyatlan takes seconds to import: once, here, for this file only.
from pyatlan.model.assets import Table
from pyatlan.model.core import AtlanTag, AtlanTagName
from pyatlan.model.events import (
    AssetCreatePayload,
    AssetDeletePayload,
    AtlanEvent,
    AtlanTagAddPayload,
    AtlanTagDeletePayload,
)

from lily_dagster_tests.webhook.conftest import Live, unique
from lily_dagster_tests.webhook.vendor_setup import CONNECTION, VendorSecrets

SCHEMA_QN = f"{CONNECTION}/SALES/PUBLIC"


def new_table(description: str | None = "orders, one row per order") -> Table:
    table = Table.creator(name=unique("ORDERS").upper(), schema_qualified_name=SCHEMA_QN)
    if description is not None:
        table.description = description
    return table


def serialise(event: AtlanEvent) -> bytes:
    return event.json(by_alias=True, exclude_unset=True).encode()


def post(live: Live, body: bytes, secret: str | None, tenant: str = "acme") -> Any:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["x-atlan-signing-secret"] = secret
    return live.client.post(f"/v1/webhooks/atlan/{tenant}", content=body, headers=headers)


def now_ms() -> int:
    return int(time.time() * 1000)


def test_validation_ping_is_answered_and_stores_nothing(
    vendor_live: Live, vendor_secrets: VendorSecrets
) -> None:
    body = json.dumps(
        {"atlan-webhook": "Hello, humans of data! It worked. Excited to see what you will build!"}
    )
    response = post(vendor_live, body.encode(), vendor_secrets.atlan)
    assert response.status_code == 200, response.text
    assert vendor_live.inbox() == []
    assert vendor_live.quarantine_tenants() == []


def test_entity_create_becomes_an_upsert_of_the_table(
    vendor_live: Live, vendor_secrets: VendorSecrets
) -> None:
    table = new_table()
    table.certificate_status = "DRAFT"  # type: ignore[assignment]
    event = AtlanEvent(
        msg_creation_time=now_ms(),
        message=AssetCreatePayload(
            operation_type="ENTITY_CREATE", event_time=now_ms() - 5_000, entity=table
        ),
    )
    body = serialise(event)
    response = post(vendor_live, body, vendor_secrets.atlan)
    assert response.status_code == 202, response.text
    assert len(response.json()["accepted"]) == 1
    [stored] = vendor_live.inbox()
    envelope = json.loads(stored.payload)
    assert stored.source == "atlan"
    assert envelope["tenant"] == "acme"
    assert envelope["op"] == "upsert"
    asset = envelope["asset"]
    assert asset["type_name"] == "Table"
    assert asset["qualified_name"] == table.qualified_name
    assert asset["name"] == table.name
    assert asset["attributes"]["description"] == "orders, one row per order"
    assert asset["attributes"]["certificate_status"] == "DRAFT"
    assert asset["attributes"]["parent_qualified_name"] == SCHEMA_QN
    # Atlan retries a webhook it got no answer for: the same body is stored once.
    again = post(vendor_live, body, vendor_secrets.atlan)
    assert again.status_code == 202 and again.json()["duplicates"] == 1
    assert len(vendor_live.inbox()) == 1


@pytest.mark.parametrize("secret", [None, "", "wrong-secret"])
def test_wrong_signing_secret_is_401_and_stores_nothing(
    vendor_live: Live, secret: str | None
) -> None:
    body = serialise(
        AtlanEvent(
            message=AssetCreatePayload(
                operation_type="ENTITY_CREATE", event_time=now_ms(), entity=new_table()
            )
        )
    )
    response = post(vendor_live, body, secret)
    assert response.status_code == 401, response.text
    assert set(response.json()) >= {"error", "detail"}
    assert vendor_live.inbox() == []
    assert vendor_live.quarantine_tenants() == []


def test_ping_without_the_secret_is_401(vendor_live: Live) -> None:
    response = post(vendor_live, b'{"atlan-webhook": "Hello"}', "nope")
    assert response.status_code == 401


def test_entity_delete_becomes_a_delete(vendor_live: Live, vendor_secrets: VendorSecrets) -> None:
    table = new_table(description=None)
    body = serialise(
        AtlanEvent(
            message=AssetDeletePayload(
                operation_type="ENTITY_DELETE", event_time=now_ms(), entity=table
            )
        )
    )
    response = post(vendor_live, body, vendor_secrets.atlan)
    assert response.status_code == 202, response.text
    [stored] = vendor_live.inbox()
    envelope = json.loads(stored.payload)
    assert envelope["op"] == "delete"
    assert envelope["asset"]["qualified_name"] == table.qualified_name
    assert envelope["asset"]["type_name"] == "Table"


def test_classification_add_and_delete_become_patches(
    vendor_live: Live, vendor_secrets: VendorSecrets
) -> None:
    table = new_table(description=None)
    added = AtlanEvent(
        message=AtlanTagAddPayload(
            operation_type="CLASSIFICATION_ADD",
            event_time=now_ms() - 1000,
            entity=table,
            mutated_details=[AtlanTag(type_name=AtlanTagName("PII"))],
        )
    )
    removed = AtlanEvent(
        message=AtlanTagDeletePayload(
            operation_type="CLASSIFICATION_DELETE",
            event_time=now_ms(),
            entity=table,
            mutated_details=[AtlanTag(type_name=AtlanTagName("Deprecated"))],
        )
    )
    for event in (added, removed):
        response = post(vendor_live, serialise(event), vendor_secrets.atlan)
        assert response.status_code == 202, response.text
    envelopes = [json.loads(e.payload) for e in vendor_live.inbox()]
    assert [e["asset"]["qualified_name"] for e in envelopes] == [table.qualified_name] * 2
    assert [e["asset"]["attributes"]["lily_patch"] for e in envelopes] == [
        {"add_classifications": ["PII"]},
        {"remove_classifications": ["Deprecated"]},
    ]


def test_array_of_events_in_one_delivery(vendor_live: Live, vendor_secrets: VendorSecrets) -> None:
    tables = [new_table(), new_table()]
    events = [
        json.loads(
            serialise(
                AtlanEvent(
                    message=AssetCreatePayload(
                        operation_type="ENTITY_CREATE", event_time=now_ms(), entity=t
                    )
                )
            )
        )
        for t in tables
    ]
    response = post(vendor_live, json.dumps(events).encode(), vendor_secrets.atlan)
    assert response.status_code == 202, response.text
    stored = [json.loads(e.payload)["asset"]["qualified_name"] for e in vendor_live.inbox()]
    assert stored == [t.qualified_name for t in tables]
