"""Envelopes and event frames for tests, as producers send them and the pipeline hands
them to the hub."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from lily_dagster.lib.enrichment import normalise_owners
from lily_dagster.lib.envelope import decode_envelopes

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def ev(
    event_id: str,
    qn: str,
    minutes: float,
    op: str = "upsert",
    *,
    tenant: str = "acme",
    type_name: str = "Table",
    name: str | None = None,
    attributes: dict[str, Any] | None = None,
    classifications: list[str] | None = None,
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
) -> dict[str, Any]:
    asset: dict[str, Any] = {
        "type_name": type_name,
        "qualified_name": qn,
        "name": name if name is not None else qn.rsplit("/", 1)[-1],
        "attributes": attributes if attributes is not None else {},
        "classifications": classifications if classifications is not None else [],
    }
    if inputs is not None or outputs is not None:
        asset["inputs"] = inputs or []
        asset["outputs"] = outputs or []
    return {
        "event_id": event_id,
        "tenant": tenant,
        "source": "test",
        "op": op,
        "event_time": at(minutes),
        "asset": asset,
    }


def frame(envelopes: list[dict[str, Any]]) -> pl.DataFrame:
    """Envelopes as the pipeline hands them to the hub: decoded, then owners normalised."""
    result = decode_envelopes(
        [json.dumps(e) for e in envelopes],
        [f"test:{i}" for i in range(len(envelopes))],
        tenant=None,
        max_event_bytes=1 << 20,
    )
    assert result.rejects.is_empty(), result.rejects.to_dicts()
    return normalise_owners(result.events)


def table_messages(tenant: str, names: list[str]) -> list[tuple[bytes, bytes]]:
    """Kafka messages (key, value): an upsert of a Table per name, for `tenant`."""
    messages = []
    for name in names:
        qualified_name = f"default/snowflake/1700000000/DB/SCH/{name}"
        envelope = {
            "event_id": f"{tenant}-{name}",
            "tenant": tenant,
            "source": "snowflake",
            "op": "upsert",
            "event_time": "2026-11-23T10:00:00Z",
            "asset": {"type_name": "Table", "qualified_name": qualified_name, "name": name},
        }
        messages.append((qualified_name.encode(), json.dumps(envelope).encode()))
    return messages
