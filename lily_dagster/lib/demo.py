"""Demo traffic: several tenants' warehouses, lineage and dashboards as envelope events, with
updates, deletes, restores, duplicates, out-of-order and invalid events, plus a plain-Python
reference of the state the contract says the hub must end in."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from lily_dagster.lib.times import iso_utc
from lily_dagster.settings import UNROUTED_TENANT, is_tenant

DEMO_TENANTS = ("acme", "globex", "initech")
# The demo's column names that hold personal data, by kind: the default pre-ingest chain
# (pii-classify) tags them `PII`, `GDPR:personal-data` and `PII:<kind>`.
DEMO_PII_COLUMNS = {"EMAIL": "email"}


@dataclass
class DemoTraffic:
    messages: list[tuple[bytes | None, bytes]] = field(default_factory=list)  # (key, value)
    valid: list[dict[str, Any]] = field(default_factory=list)  # every valid envelope sent
    # invalid payloads: tenant whose quarantine must hold it, expected reason
    invalid: list[tuple[bytes, str, str]] = field(default_factory=list)

    def expected_state(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The hubs as the default pre-ingest chain leaves them: owners normalised, and the
        demo's columns of personal data classified."""
        return expected_hub_state(self.valid, pii_columns=DEMO_PII_COLUMNS)

    def expected_quarantine(self) -> dict[str, list[tuple[str, str]]]:
        """tenant → sorted (raw, reason) of distinct invalid payloads."""
        out: dict[str, set[tuple[str, str]]] = {}
        for raw, tenant, reason in self.invalid:
            out.setdefault(tenant, set()).add((raw.decode("utf-8", "replace"), reason))
        return {t: sorted(v) for t, v in out.items()}


def _norm_principals(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return sorted({v.strip().lower() for v in values if v.strip()})


def expected_hub_state(
    envelopes: list[dict[str, Any]], pii_columns: dict[str, str] | None = None
) -> dict[str, dict[str, dict[str, Any]]]:
    """CONTRACT.md §1 in plain Python: per (tenant, qualified_name) the status of the latest
    event by (event_time, event_id), the content of the latest upsert (else latest delete),
    owners normalised as the enrichment does, and the columns named in `pii_columns` (name →
    kind) classified as pii-classify does when it runs. Records as `lily hub export` prints
    them, without `updated_at`."""

    def when(e: dict[str, Any]) -> tuple[datetime, str]:
        return datetime.fromisoformat(e["event_time"].replace("Z", "+00:00")), e["event_id"]

    latest: dict[tuple[str, str], dict[str, Any]] = {}
    content: dict[tuple[str, str], dict[str, Any]] = {}
    for e in envelopes:
        key = (e["tenant"], e["asset"]["qualified_name"])
        if key not in latest or when(e) > when(latest[key]):
            latest[key] = e
        rank = (e["op"] == "upsert", *when(e))
        if key not in content or rank > (content[key]["op"] == "upsert", *when(content[key])):
            content[key] = e
    state: dict[str, dict[str, dict[str, Any]]] = {}
    for key, last in latest.items():
        asset = content[key]["asset"]
        attributes = dict(asset.get("attributes", {}))
        for principal in ("owner_users", "owner_groups"):
            if attributes.get(principal) is not None:
                attributes[principal] = _norm_principals(attributes[principal])
        classifications = list(asset.get("classifications", []))
        kind = (pii_columns or {}).get(asset["name"])
        if kind and asset["type_name"] == "Column" and content[key]["op"] == "upsert":
            added = ["PII", "GDPR:personal-data", f"PII:{kind}"]
            classifications += [t for t in added if t not in classifications]
        record: dict[str, Any] = {
            "qualified_name": key[1],
            "type_name": asset["type_name"],
            "name": asset["name"],
            "status": "DELETED" if last["op"] == "delete" else "ACTIVE",
            "attributes": attributes,
            "classifications": classifications,
            "event_time": iso_utc(when(last)[0]),
            "event_id": last["event_id"],
        }
        if asset["type_name"] == "Process" or asset.get("inputs") or asset.get("outputs"):
            record["inputs"] = list(asset.get("inputs", []))
            record["outputs"] = list(asset.get("outputs", []))
        state.setdefault(key[0], {})[key[1]] = record
    return state


class _Builder:
    def __init__(self, seed: int, start: datetime) -> None:
        self.rng = random.Random(seed)
        self.clock = start
        self.seq = 0
        self.traffic = DemoTraffic()
        self.pending: list[tuple[bytes | None, bytes]] = []

    def _tick(self) -> datetime:
        self.clock += timedelta(milliseconds=self.rng.randint(1, 1500))
        return self.clock

    def event(
        self,
        tenant: str,
        op: str,
        type_name: str,
        qn: str,
        name: str,
        attributes: dict[str, Any] | None = None,
        when: datetime | None = None,
        **asset_extra: Any,
    ) -> dict[str, Any]:
        self.seq += 1
        at = when or self._tick()
        env = {
            "event_id": f"{at.strftime('%Y%m%d%H%M%S%f')}-{tenant}-{self.seq:06d}",
            "tenant": tenant,
            "source": self.rng.choice(["snowflake", "dbt", "tableau"]),
            "op": op,
            "event_time": at.isoformat().replace("+00:00", "Z"),
            "asset": {
                "type_name": type_name,
                "qualified_name": qn,
                "name": name,
                "attributes": attributes or {},
                **asset_extra,
            },
        }
        return env

    def send(self, env: dict[str, Any]) -> None:
        self.traffic.valid.append(env)
        self.pending.append((env["asset"]["qualified_name"].encode(), json.dumps(env).encode()))

    def send_invalid(self, raw: bytes, reason: str, tenant_hint: Any) -> None:
        tenant = (
            tenant_hint
            if isinstance(tenant_hint, str) and is_tenant(tenant_hint)
            else UNROUTED_TENANT
        )
        self.traffic.invalid.append((raw, tenant, reason))
        self.pending.append((None, raw))


def generate_demo(
    tenants: tuple[str, ...] = DEMO_TENANTS,
    tables_per_tenant: int = 6,
    columns_per_table: int = 5,
    seed: int = 7,
    start: datetime | None = None,
    oversized_bytes: int = 1_200_000,
) -> DemoTraffic:
    """A deterministic burst of demo traffic for `tenants`."""
    b = _Builder(seed, start or datetime.now(UTC) - timedelta(hours=1))
    owners = ["jdoe", " JDoe", "asmith", "ops-team"]
    for tenant in tenants:
        conn = "default/snowflake/1700000000"
        db, sch = f"{conn}/{tenant.upper()}_DB", f"{conn}/{tenant.upper()}_DB/RAW"
        tables = [f"{sch}/T{i:02d}" for i in range(tables_per_tenant)]
        children: list[dict[str, Any]] = []
        children.append(
            b.event(tenant, "upsert", "Schema", sch, "RAW", {"parent_qualified_name": db})
        )
        for ti, table in enumerate(tables):
            children.append(
                b.event(
                    tenant,
                    "upsert",
                    "Table",
                    table,
                    f"T{ti:02d}",
                    {
                        "description": f"table {ti} of {tenant}",
                        "owner_users": [b.rng.choice(owners), b.rng.choice(owners)],
                        "owner_groups": ["Data-Eng"],
                        "certificate_status": "DRAFT",
                        "parent_qualified_name": sch,
                    },
                )
            )
            for ci in range(columns_per_table):
                col = "EMAIL" if ci == 0 else f"C{ci}"
                children.append(
                    b.event(
                        tenant,
                        "upsert",
                        "Column",
                        f"{table}/{col}",
                        col,
                        {"data_type": "VARCHAR", "order": ci + 1, "parent_qualified_name": table},
                        classifications=["PII"] if col == "EMAIL" else [],
                    )
                )
        for pi in range(len(tables) - 1):
            children.append(
                b.event(
                    tenant,
                    "upsert",
                    "Process",
                    f"{conn}/process/{tenant}-load-{pi}",
                    f"load {pi}",
                    inputs=[tables[pi]],
                    outputs=[tables[pi + 1]],
                )
            )
        children.append(
            b.event(
                tenant,
                "upsert",
                "TableauDashboard",
                f"default/tableau/1/{tenant}/overview",
                "Overview",
            )
        )
        database = b.event(tenant, "upsert", "Database", db, f"{tenant.upper()}_DB")
        # Children before their parents: the database arrives last.
        for env in [*children, database]:
            b.send(env)
        # Updates: a newer description, then the stale version it replaces arrives late.
        for table in tables[:3]:
            stale = b.event(
                tenant, "upsert", "Table", table, table.rsplit("/", 1)[1], {"description": "stale"}
            )
            fresh = b.event(
                tenant,
                "upsert",
                "Table",
                table,
                table.rsplit("/", 1)[1],
                {
                    "description": "certified orders",
                    "certificate_status": "VERIFIED",
                    "owner_users": ["ASmith "],
                },
            )
            b.send(fresh)
            b.send(stale)
        # Duplicates: the same events delivered twice.
        for env in b.traffic.valid[-4:]:
            b.send(env)
        # Deletes: a column removed; a table deleted and later restored.
        b.send(b.event(tenant, "delete", "Column", f"{tables[0]}/C1", "C1"))
        b.send(b.event(tenant, "delete", "Table", tables[-1], tables[-1].rsplit("/", 1)[1]))
        b.send(
            b.event(
                tenant,
                "upsert",
                "Table",
                tables[-1],
                tables[-1].rsplit("/", 1)[1],
                {"description": "back"},
            )
        )
        b.send(
            b.event(tenant, "delete", "View", f"{sch}/V_GONE", "V_GONE")
        )  # delete of an unseen asset
        _invalid_events(b, tenant, oversized_bytes)
    b.send_invalid(b"this is not json", "malformed_json", None)
    b.send_invalid(
        json.dumps({"event_id": "no-tenant", "op": "upsert"}).encode(), "missing_field", None
    )
    b.send_invalid(
        json.dumps(b.event("ACME!", "upsert", "Table", "q", "n")).encode(), "bad_tenant", None
    )
    # Interleave tenants as a shared topic would; per-asset order is irrelevant by contract.
    b.rng.shuffle(b.pending)
    b.traffic.messages = b.pending
    return b.traffic


def _invalid_events(b: _Builder, tenant: str, oversized_bytes: int) -> None:
    good = b.event(tenant, "upsert", "Table", f"default/x/{tenant}/BAD", "BAD")

    def variant(**changes: Any) -> bytes:
        env = json.loads(json.dumps(good))
        env["event_id"] = f"{good['event_id']}-{len(b.traffic.invalid)}"
        for path, value in changes.items():
            target = env
            *parents, leaf = path.split("__")
            for p in parents:
                target = target[p]
            if value is _DROP:
                target.pop(leaf)
            else:
                target[leaf] = value
        return json.dumps(env).encode()

    b.send_invalid(b'{"tenant": "' + tenant.encode() + b'", "event_id": ', "malformed_json", None)
    b.send_invalid(variant(source=_DROP), "missing_field", tenant)
    b.send_invalid(variant(asset__name=_DROP), "missing_field", tenant)
    b.send_invalid(variant(asset__name=42), "wrong_type", tenant)
    b.send_invalid(variant(asset__classifications="PII"), "wrong_type", tenant)
    b.send_invalid(variant(op="merge"), "unknown_op", tenant)
    b.send_invalid(variant(event_time="yesterday"), "bad_event_time", tenant)
    b.send_invalid(variant(asset__qualified_name=""), "empty_field", tenant)
    b.send_invalid(variant(asset__type_name="not a type"), "bad_type_name", tenant)
    b.send_invalid(
        variant(asset__attributes__description="x" * oversized_bytes), "oversized", tenant
    )


_DROP = object()
