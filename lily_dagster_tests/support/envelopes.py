"""Envelopes (CONTRACT.md §1) as producers send them, for every suite and the benchmarks.

`envelope` builds one as a dict: every field a keyword with a plain default (an upsert of
the Table ORDERS for tenant acme, source snowflake, at T0); `encode` gives the bytes a
producer sends. `ev` is the timeline shorthand (event id, qualified name, minutes after T0,
op) of the hub tests; `table_messages` Kafka messages of Table upserts.

Imports nothing from lily_dagster: the contract suite, which tests Lily from outside, uses
it too. `frames` has the decoded forms."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
SCHEMA = "default/snowflake/1700000000/DB/SCH"
ORDERS = f"{SCHEMA}/ORDERS"


def at(minutes: float) -> str:
    """T0 plus `minutes`, as an envelope's event_time (UTC, `Z`)."""
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def envelope(
    qualified_name: str = ORDERS,
    *,
    event_id: str | None = None,
    tenant: str = "acme",
    source: str = "snowflake",
    op: str = "upsert",
    event_time: str = "2026-11-23T10:00:00Z",
    type_name: str = "Table",
    name: str | None = None,
    attributes: dict[str, Any] | None = None,
    classifications: list[str] | None = None,
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
) -> dict[str, Any]:
    """One envelope. `name` defaults to the qualified name's last part, `event_id` to one made
    of tenant, qualified name, op and event_time; attributes, classifications, inputs and
    outputs are in the asset only when given (None leaves the key out)."""
    if event_id is None:
        event_id = f"{tenant}:{qualified_name}:{op}@{event_time}"
    asset: dict[str, Any] = {
        "type_name": type_name,
        "qualified_name": qualified_name,
        "name": name if name is not None else qualified_name.rsplit("/", 1)[-1],
    }
    optional = {
        "attributes": attributes,
        "classifications": classifications,
        "inputs": inputs,
        "outputs": outputs,
    }
    asset.update({key: value for key, value in optional.items() if value is not None})
    return {
        "event_id": event_id,
        "tenant": tenant,
        "source": source,
        "op": op,
        "event_time": event_time,
        "asset": asset,
    }


def encode(envelope: dict[str, Any]) -> bytes:
    """The envelope as a producer sends it: JSON, UTF-8."""
    return json.dumps(envelope).encode()


def ev(
    event_id: str,
    qn: str,
    minutes: float,
    op: str = "upsert",
    *,
    attributes: dict[str, Any] | None = None,
    classifications: list[str] | None = None,
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """An event of a timeline at T0 + `minutes` (source `test`): attributes and
    classifications always given (empty by default), inputs and outputs both when either is;
    `fields` as `envelope`'s."""
    if inputs is not None or outputs is not None:
        inputs, outputs = inputs or [], outputs or []
    return envelope(
        qn,
        event_id=event_id,
        op=op,
        source=fields.pop("source", "test"),
        event_time=at(minutes),
        attributes=attributes if attributes is not None else {},
        classifications=classifications if classifications is not None else [],
        inputs=inputs,
        outputs=outputs,
        **fields,
    )


def table_messages(tenant: str, names: list[str]) -> list[tuple[bytes, bytes]]:
    """Kafka messages (key, value): an upsert of a Table per name, for `tenant`."""
    messages = []
    for name in names:
        qualified_name = f"{SCHEMA}/{name}"
        body = envelope(qualified_name, event_id=f"{tenant}-{name}", tenant=tenant)
        messages.append((qualified_name.encode(), encode(body)))
    return messages
