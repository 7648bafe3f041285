"""The UI suite's workload: a few tenants' tables and columns, a deleted table, and invalid
events of several kinds, with the hub and quarantine they must leave (CONTRACT §1).

acme's config chains the `lineage-check` hook, which quarantines its Processes without
inputs or outputs (`bad_lineage`); acme also sends events dated a month ahead
(`bad_event_time`). Once the operator drops the hook (`FIXED_CONFIG`), a quarantine replay
applies the Processes and keeps the rest: a quarantine mostly invalid by nature, past the
share that blocks a batch (the stack runs with LILY_BLOCK_MIN_EVENTS=5)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from lily_dagster_tests.support.envelopes import ev

TENANTS = ("acme", "globex", "initech")
REPLAY_TENANT = "acme"
PREFIX = "default/snowflake/1700000000/UI_DB/SALES"
BLOCK_MIN_EVENTS = 5

CONFIG = {
    "tenants": [
        {"name": "acme", "hooks": {"pre_ingest": ["owner-normalise", "lineage-check"]}},
        {"name": "globex"},
        {"name": "initech"},
    ]
}
# The operator's fix: acme's Processes without lineage are fine after all.
FIXED_CONFIG = {"tenants": [{"name": t} for t in TENANTS]}


def config_text(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=2)  # JSON is YAML


@dataclass
class Workload:
    messages: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    # tenant → qualified name → the hub record's fields the tests compare
    hub: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # acme's Processes: quarantined at ingest, in the hub after the replay
    replayable: dict[str, dict[str, Any]] = field(default_factory=dict)
    # tenant → how many events its quarantine holds after ingest
    quarantined: dict[str, int] = field(default_factory=dict)
    # acme's quarantined events that stay quarantined after the replay
    still_invalid: int = 0

    def expected_hub(self, tenant: str, replayed: bool = False) -> dict[str, dict[str, Any]]:
        expected = dict(self.hub.get(tenant, {}))
        if replayed and tenant == REPLAY_TENANT:
            expected.update(self.replayable)
        return expected


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """The fields of a hub export record that the workload determines."""
    return {k: record.get(k) for k in ("type_name", "name", "status", "event_id")}


def _record(event: dict[str, Any], status: str) -> dict[str, Any]:
    asset = event["asset"]
    return {
        "type_name": asset["type_name"],
        "name": asset["name"],
        "status": status,
        "event_id": event["event_id"],
    }


def _message(event: dict[str, Any] | bytes) -> tuple[bytes | None, bytes]:
    if isinstance(event, bytes):
        return (None, event)
    return (event["asset"]["qualified_name"].encode(), json.dumps(event).encode())


def _column(tenant: str, table: str, name: str, minutes: float) -> dict[str, Any]:
    return ev(
        f"{tenant}-{table}-{name}-{minutes}",
        f"{PREFIX}/{table}/{name}",
        minutes,
        tenant=tenant,
        type_name="Column",
        attributes={"parent_qualified_name": f"{PREFIX}/{table}", "data_type": "VARCHAR"},
    )


def _invalid(tenant: str, n: int) -> list[bytes]:
    """Events that fail validation whatever the config: unknown op, missing name, NaN."""
    base = ev(
        f"{tenant}-bad-{n}", f"{PREFIX}/BAD_{n}", 5, tenant=tenant, attributes={"description": "x"}
    )
    no_name = {**base, "asset": {k: v for k, v in base["asset"].items() if k != "name"}}
    # NaN is not JSON (malformed_json), though the tenant can still be read from it.
    nan = json.dumps({**base, "event_id": f"{tenant}-nan-{n}"}).replace('"x"', "NaN")
    return [
        json.dumps({**base, "op": "explode"}).encode(),
        json.dumps({**no_name, "event_id": f"{tenant}-noname-{n}"}).encode(),
        nan.encode(),
    ]


def _spread(valid: list[Any], invalid: list[Any]) -> list[Any]:
    """`invalid` spread evenly through `valid`, so that no slice a sensor tick might cut
    is mostly invalid (and blocks on its own)."""
    out: list[Any] = []
    step = max(1, len(valid) // max(1, len(invalid)))
    pending = list(invalid)
    for i, item in enumerate(valid):
        out.append(item)
        if pending and i % step == step - 1:
            out.append(pending.pop(0))
    return out + pending


def generate(now: datetime | None = None) -> Workload:
    now = now or datetime.now(UTC)
    ahead = (now + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    work = Workload()
    for tenant in TENANTS:
        hub: dict[str, dict[str, Any]] = {}
        valid: list[dict[str, Any]] = []
        orders = ev(f"{tenant}-orders", f"{PREFIX}/ORDERS", 1, tenant=tenant, name="ORDERS")
        valid.append(orders)
        hub[f"{PREFIX}/ORDERS"] = _record(orders, "ACTIVE")
        columns = 24 if tenant == REPLAY_TENANT else 4
        for i in range(columns):
            column = _column(tenant, "ORDERS", f"COL_{i}", 2 + i)
            valid.append(column)
            hub[column["asset"]["qualified_name"]] = _record(column, "ACTIVE")
        # A table created, then deleted: kept as DELETED.
        legacy_qn = f"{PREFIX}/LEGACY"
        valid.append(ev(f"{tenant}-legacy-1", legacy_qn, 1, tenant=tenant))
        deleted = ev(f"{tenant}-legacy-2", legacy_qn, 3, op="delete", tenant=tenant)
        valid.append(deleted)
        hub[legacy_qn] = _record(deleted, "DELETED")
        invalid: list[Any] = _invalid(tenant, 1)
        if tenant == REPLAY_TENANT:
            for i in range(3):
                process = ev(
                    f"{tenant}-process-{i}",
                    f"default/dbt/1700000000/UI_DB/process/P{i}",
                    4,
                    tenant=tenant,
                    type_name="Process",
                    inputs=[],
                    outputs=[],
                )
                valid.append(process)  # passes every rule; the hook rejects it
                work.replayable[process["asset"]["qualified_name"]] = _record(process, "ACTIVE")
            late = [
                {**_column(tenant, "ORDERS", f"LATE_{i}", 6), "event_time": ahead} for i in range(8)
            ]
            invalid += late
            work.still_invalid = len(invalid)
            work.quarantined[tenant] = len(invalid) + len(work.replayable)
        else:
            work.quarantined[tenant] = len(invalid)
        work.hub[tenant] = hub
        work.messages += [_message(e) for e in _spread(valid, invalid)]
    return work
