"""A small deterministic workload in the envelope of CONTRACT.md §1, and the hub state the
contract's rules give for it, computed here independently of Lily.

Per tenant: a database, a schema, five tables with their columns and a lineage process;
updates, an update older than the current one arriving after it, a tie on event_time,
exact duplicates, deletes with a later restore and deletes never restored (a table deleted
while its columns stay active, a column, an asset never seen), children sent before their
parents; invalid events of every kind a user's producer gets wrong. Part of it goes to Kafka
(shuffled), part through the webhook receiver. Sent after the first run: `late`, stale
events which must change nothing, and `fresh`, two real changes (so that the second run,
too, ends with changes that targets must have received when it returns)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

TENANTS = ("acme", "globex", "initech")
SHARED_TOPIC = "contract.shared"
BOUND_TOPIC = "contract.globex"  # bound to globex in LILY_CONFIG
BOUND_TENANT = "globex"
UNROUTED = "_unrouted"
CONNECTION = "default/snowflake/1700000000"
MAX_EVENT_BYTES = 65_536  # LILY_MAX_EVENT_BYTES of the scenario

# Column names that hold personal data (PII by default) and one that merely looks alike.
PII_COLUMNS = ("customer_email", "cc_num", "iban")
NOT_PII_COLUMNS = ("email_campaign_id",)
# Names whose classifications a default PII hook may legitimately change.
PII_SENSITIVE_NAMES = frozenset(PII_COLUMNS + NOT_PII_COLUMNS)

TABLES: dict[str, tuple[str, ...]] = {
    "ORDERS": ("ORDER_ID", "AMOUNT", "CURRENCY", "email_campaign_id"),
    "CUSTOMERS": ("CUSTOMER_ID", "customer_email", "cc_num", "iban", "REGION_CODE"),
    "PAYMENTS": ("PAYMENT_ID", "AMOUNT", "STATUS_CODE"),
    "LEGACY_ORDERS": ("OLD_ID", "OLD_AMOUNT"),  # table deleted, never restored
    "ARCHIVE_2019": ("ARCHIVED_ID",),  # table deleted, then restored
}


@dataclass(frozen=True)
class Invalid:
    """An event that must be quarantined, with its reason, and never reach the hub."""

    raw: bytes
    reason: str
    quarantines: tuple[str, ...]  # the tenant quarantines it may be in (first: the usual one)
    via: str  # "kafka:<topic>" or "webhook"
    qualified_name: str | None = None  # the asset it names, which the hub must not have
    kind: str = ""  # "literal" (NaN, Infinity), "binary" (not UTF-8)


@dataclass(frozen=True)
class WebhookPost:
    tenant: str
    body: Any  # one envelope or a list; for arrays with invalid items, raw dicts
    valid_ids: tuple[str, ...]
    rejected: tuple[tuple[int, str], ...]  # (index, reason) of the items refused


@dataclass
class Workload:
    valid: list[dict[str, Any]] = field(default_factory=list)  # every valid event sent
    kafka: dict[str, list[tuple[bytes | None, bytes]]] = field(default_factory=dict)
    posts: list[WebhookPost] = field(default_factory=list)
    invalid: list[Invalid] = field(default_factory=list)
    late: list[dict[str, Any]] = field(default_factory=list)  # stale, sent after run 1
    late_kafka: dict[str, list[tuple[bytes | None, bytes]]] = field(default_factory=dict)
    fresh: list[dict[str, Any]] = field(default_factory=list)  # new changes, after run 1
    fresh_kafka: dict[str, list[tuple[bytes | None, bytes]]] = field(default_factory=dict)
    fresh_posts: list[WebhookPost] = field(default_factory=list)

    def events_of(self, tenant: str) -> list[dict[str, Any]]:
        return [e for e in self.valid if e["tenant"] == tenant]


def table_qn(tenant: str, table: str) -> str:
    return f"{CONNECTION}/{tenant.upper()}_DB/SALES/{table}"


def column_qn(tenant: str, table: str, column: str) -> str:
    return f"{table_qn(tenant, table)}/{column}"


def process_qn(tenant: str) -> str:
    return f"{CONNECTION}/process/{tenant}-orders-to-payments"


def stamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope, separators=(",", ":")).encode()


class _Events:
    def __init__(self, tenant: str, start: datetime) -> None:
        self.tenant = tenant
        self.start = start
        self.seq = 0

    def at(self, minutes: float) -> datetime:
        return self.start + timedelta(minutes=minutes)

    def make(
        self,
        op: str,
        type_name: str,
        qualified_name: str,
        name: str,
        minutes: float,
        attributes: dict[str, Any] | None = None,
        *,
        event_id: str | None = None,
        classifications: list[str] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        self.seq += 1
        asset: dict[str, Any] = {
            "type_name": type_name,
            "qualified_name": qualified_name,
            "name": name,
            "attributes": attributes or {},
        }
        if classifications is not None:
            asset["classifications"] = classifications
        asset.update(extra)
        return {
            "event_id": event_id or f"{self.tenant}-e{self.seq:04d}",
            "tenant": self.tenant,
            "source": "snowflake" if type_name != "Process" else "dbt",
            "op": op,
            "event_time": stamp(self.at(minutes)),
            "asset": asset,
        }


@dataclass
class _TenantEvents:
    kafka: list[dict[str, Any]] = field(default_factory=list)
    hook: list[dict[str, Any]] = field(default_factory=list)
    late: list[dict[str, Any]] = field(default_factory=list)  # stale, on Kafka after run 1
    fresh_kafka: list[dict[str, Any]] = field(default_factory=list)  # new, after run 1
    fresh_hook: list[dict[str, Any]] = field(default_factory=list)


def _tenant_events(tenant: str, start: datetime) -> _TenantEvents:
    """The valid events of one tenant, by transport and phase."""
    ev = _Events(tenant, start)
    db = f"{CONNECTION}/{tenant.upper()}_DB"
    schema = f"{db}/SALES"
    kafka: list[dict[str, Any]] = []
    hook: list[dict[str, Any]] = []
    late: list[dict[str, Any]] = []

    database = ev.make("upsert", "Database", db, f"{tenant.upper()}_DB", 0)
    kafka.append(ev.make("upsert", "Schema", schema, "SALES", 1, {"parent_qualified_name": db}))
    for ti, (table, columns) in enumerate(TABLES.items()):
        table_event = ev.make(
            "upsert",
            "Table",
            table_qn(tenant, table),
            table,
            2 + ti,
            {
                "description": f"{table.lower()} of {tenant}, v1",
                "owner_users": ["jdoe"],
                "owner_groups": ["data-eng"],
                "certificate_status": "DRAFT",
                "parent_qualified_name": schema,
            },
            classifications=["Finance"] if table == "PAYMENTS" else [],
        )
        column_events = [
            ev.make(
                "upsert",
                "Column",
                column_qn(tenant, table, column),
                column,
                10 + ti + ci / 10,
                {
                    "data_type": "VARCHAR" if "ID" not in column else "NUMBER",
                    "order": ci + 1,
                    "parent_qualified_name": table_qn(tenant, table),
                    "description": f"{column} of {table}",
                },
            )
            for ci, column in enumerate(columns)
        ]
        # Children first: the columns of CUSTOMERS come through the webhook before anything
        # else; the others are sent ahead of their table on Kafka (then shuffled).
        if table == "CUSTOMERS":
            hook.extend(column_events)
        else:
            kafka.extend(column_events)
        kafka.append(table_event)

    orders, customers = table_qn(tenant, "ORDERS"), table_qn(tenant, "CUSTOMERS")
    payments, archive = table_qn(tenant, "PAYMENTS"), table_qn(tenant, "ARCHIVE_2019")
    legacy = table_qn(tenant, "LEGACY_ORDERS")

    # Lineage, then an update of it that adds an input.
    kafka.append(
        ev.make(
            "upsert",
            "Process",
            process_qn(tenant),
            "orders to payments",
            20,
            {"description": "dbt model payments"},
            inputs=[orders],
            outputs=[payments],
        )
    )
    kafka.append(
        ev.make(
            "upsert",
            "Process",
            process_qn(tenant),
            "orders to payments",
            40,
            {"description": "dbt model payments, v2"},
            inputs=[orders, customers],
            outputs=[payments],
        )
    )

    # An update of ORDERS (webhook), and an older one sent after it (Kafka).
    orders_attrs = {
        "owner_users": ["asmith", "jdoe"],
        "owner_groups": ["data-eng"],
        "parent_qualified_name": schema,
    }
    hook.append(
        ev.make(
            "upsert",
            "Table",
            orders,
            "ORDERS",
            50,
            {**orders_attrs, "description": "certified orders", "certificate_status": "VERIFIED"},
        )
    )
    kafka.append(
        ev.make(
            "upsert",
            "Table",
            orders,
            "ORDERS",
            45,
            {**orders_attrs, "description": "stale orders", "certificate_status": "DRAFT"},
        )
    )

    # A tie on event_time: the larger event_id wins, whatever comes first.
    for suffix, where in (("b", hook), ("a", kafka)):
        where.append(
            ev.make(
                "upsert",
                "Table",
                customers,
                "CUSTOMERS",
                55,
                {"description": f"customers, tie {suffix}", "parent_qualified_name": schema},
                event_id=f"{tenant}-tie-{suffix}",
            )
        )

    # Deletes: a table never restored (its columns stay active), a table deleted then
    # restored, a column never restored, an asset never seen before.
    kafka.append(ev.make("delete", "Table", legacy, "LEGACY_ORDERS", 60))
    kafka.append(ev.make("delete", "Table", archive, "ARCHIVE_2019", 61))
    kafka.append(
        ev.make(
            "upsert",
            "Table",
            archive,
            "ARCHIVE_2019",
            70,
            {"description": "archive, restored", "parent_qualified_name": schema},
        )
    )
    kafka.append(
        ev.make("delete", "Column", column_qn(tenant, "PAYMENTS", "STATUS_CODE"), "STATUS_CODE", 62)
    )
    kafka.append(ev.make("delete", "View", f"{schema}/V_GONE", "V_GONE", 63))
    # The database arrives last of all.
    kafka.append(database)

    # Late, after the first run, and all older than what the hub holds: they change nothing.
    late.append(
        ev.make(
            "upsert",
            "Table",
            orders,
            "ORDERS",
            30,
            {**orders_attrs, "description": "very stale orders"},
        )
    )
    late.append(ev.make("delete", "Table", archive, "ARCHIVE_2019", 65))
    # (Older than the table's first upsert too: the content of a deleted record is that of
    # its latest upsert, which this must not be.)
    late.append(
        ev.make(
            "upsert",
            "Table",
            legacy,
            "LEGACY_ORDERS",
            1.5,
            {"description": "resurrected?", "parent_qualified_name": schema},
        )
    )
    late.append(ev.make("delete", "View", f"{schema}/V_GONE", "V_GONE", 5))

    # New after the first run: an update of PAYMENTS (Kafka) and a new column (webhook).
    fresh_kafka = [
        ev.make(
            "upsert",
            "Table",
            payments,
            "PAYMENTS",
            80,
            {"description": "payments, after the first run", "parent_qualified_name": schema},
            classifications=["Finance"],
        )
    ]
    fresh_hook = [
        ev.make(
            "upsert",
            "Column",
            column_qn(tenant, "PAYMENTS", "FEE"),
            "FEE",
            81,
            {"data_type": "NUMBER", "order": 4, "parent_qualified_name": payments},
        )
    ]
    return _TenantEvents(kafka, hook, late, fresh_kafka, fresh_hook)


def _invalid_variants(tenant: str, start: datetime) -> list[tuple[bytes, str, str]]:
    """(raw, reason, qualified name) of envelopes with one thing wrong each."""
    ev = _Events(f"{tenant}", start)
    out: list[tuple[bytes, str, str]] = []

    def variant(reason: str, change: Any) -> None:
        qn = table_qn(tenant, f"BAD_{reason.upper()}")
        env = ev.make(
            "upsert", "Table", qn, f"BAD_{reason.upper()}", 5, event_id=f"{tenant}-bad-{reason}"
        )
        change(env)
        out.append((encode(env), reason, qn))

    variant("missing_field", lambda e: e.pop("source"))
    variant("wrong_type", lambda e: e["asset"].__setitem__("name", 42))
    variant("unknown_op", lambda e: e.__setitem__("op", "merge"))
    variant("bad_event_time", lambda e: e.__setitem__("event_time", "yesterday"))
    variant("bad_type_name", lambda e: e["asset"].__setitem__("type_name", "not a type"))
    variant(
        "oversized",
        lambda e: e["asset"]["attributes"].__setitem__("description", "x" * (MAX_EVENT_BYTES + 1)),
    )
    return out


def _with_literal(envelope: dict[str, Any], literal: str) -> bytes:
    """The envelope with attributes.order set to a bare `literal` (NaN, Infinity, …): what
    Python's json.dumps and many JSON libraries emit for floats, and RFC 8259 forbids."""
    envelope["asset"]["attributes"]["order"] = "__LITERAL__"
    return encode(envelope).replace(b'"__LITERAL__"', literal.encode())


def generate(seed: int, now: datetime | None = None) -> Workload:
    """The whole workload; `seed` only shuffles the order of Kafka messages."""
    start = (now or datetime.now(UTC)).replace(microsecond=0) - timedelta(hours=6)
    rng = random.Random(seed)
    w = Workload()
    shared: list[tuple[bytes | None, bytes]] = []
    bound: list[tuple[bytes | None, bytes]] = []
    late_shared: list[tuple[bytes | None, bytes]] = []
    late_bound: list[tuple[bytes | None, bytes]] = []
    fresh_shared: list[tuple[bytes | None, bytes]] = []
    fresh_bound: list[tuple[bytes | None, bytes]] = []

    for tenant in TENANTS:
        events = _tenant_events(tenant, start)
        kafka, hook, late = events.kafka, events.hook, events.late
        topic_messages = bound if tenant == BOUND_TENANT else shared
        late_messages = late_bound if tenant == BOUND_TENANT else late_shared
        fresh_messages = fresh_bound if tenant == BOUND_TENANT else fresh_shared
        for env in kafka:
            topic_messages.append((env["asset"]["qualified_name"].encode(), encode(env)))
        # Exact duplicates on Kafka, and one event sent over both transports.
        for env in kafka[:3]:
            topic_messages.append((env["asset"]["qualified_name"].encode(), encode(env)))
        w.valid.extend(kafka + kafka[:3])
        for env in late:
            late_messages.append((env["asset"]["qualified_name"].encode(), encode(env)))
        w.late.extend(late)
        for env in events.fresh_kafka:
            fresh_messages.append((env["asset"]["qualified_name"].encode(), encode(env)))
        w.fresh.extend(events.fresh_kafka + events.fresh_hook)
        w.fresh_posts.append(
            WebhookPost(
                tenant, events.fresh_hook, tuple(e["event_id"] for e in events.fresh_hook), ()
            )
        )

        # The webhook: the CUSTOMERS columns with two invalid items, in one array; the
        # update of ORDERS alone; the tie's other half with an event already sent on Kafka.
        columns = [e for e in hook if e["asset"]["type_name"] == "Column"]
        others = [e for e in hook if e["asset"]["type_name"] != "Column"]
        no_name = json.loads(encode(columns[0]))
        no_name["event_id"] = f"{tenant}-bad-hook-no-name"
        no_name["asset"]["qualified_name"] = column_qn(tenant, "CUSTOMERS", "NO_NAME")
        del no_name["asset"]["name"]
        bad_op = json.loads(encode(columns[0]))
        bad_op["event_id"] = f"{tenant}-bad-hook-op"
        bad_op["asset"]["qualified_name"] = column_qn(tenant, "CUSTOMERS", "BAD_OP")
        bad_op["op"] = "erase"
        array = [*columns[:2], no_name, *columns[2:], bad_op]
        w.posts.append(
            WebhookPost(
                tenant,
                array,
                tuple(e["event_id"] for e in columns),
                ((2, "missing_field"), (len(array) - 1, "unknown_op")),
            )
        )
        for raw, reason in ((no_name, "missing_field"), (bad_op, "unknown_op")):
            w.invalid.append(
                Invalid(encode(raw), reason, (tenant,), "webhook", raw["asset"]["qualified_name"])
            )
        update, tie = others[0], others[1]
        w.posts.append(WebhookPost(tenant, update, (update["event_id"],), ()))
        w.posts.append(
            WebhookPost(tenant, [tie, kafka[0]], (tie["event_id"], kafka[0]["event_id"]), ())
        )
        w.valid.extend([*columns, update, tie, kafka[0]])

        # Invalid events on Kafka, on the tenant's own topic.
        for raw, reason, qn in _invalid_variants(tenant, start):
            topic_messages.append((qn.encode(), raw))
            w.invalid.append(Invalid(raw, reason, (tenant,), f"kafka:{_topic(tenant)}", qn))

    # Not JSON: NaN and Infinity literals. On the bound topic the tenant is known whatever
    # the payload; on the shared one the message may be routed to its tenant or _unrouted.
    ev = _Events(BOUND_TENANT, start)
    qn = table_qn(BOUND_TENANT, "NAN_TABLE")
    nan_bound = _with_literal(ev.make("upsert", "Table", qn, "NAN_TABLE", 5, {}), "NaN")
    bound.append((qn.encode(), nan_bound))
    w.invalid.append(
        Invalid(nan_bound, "malformed_json", (BOUND_TENANT,), f"kafka:{BOUND_TOPIC}", qn, "literal")
    )
    for tenant, literal in (("acme", "NaN"), ("initech", "Infinity"), ("acme", "-Infinity")):
        ev = _Events(tenant, start)
        name = f"{literal.strip('-').upper()}_TABLE_{len(w.invalid)}"
        qn = table_qn(tenant, name)
        raw = _with_literal(ev.make("upsert", "Table", qn, name, 5, {}, event_id=name), literal)
        shared.append((qn.encode(), raw))
        w.invalid.append(
            Invalid(
                raw, "malformed_json", (tenant, UNROUTED), f"kafka:{SHARED_TOPIC}", qn, "literal"
            )
        )

    # Not UTF-8: an envelope with a Latin-1 byte on the bound topic, and binary garbage.
    ev = _Events(BOUND_TENANT, start)
    qn = table_qn(BOUND_TENANT, "LATIN1_TABLE")
    latin1 = encode(
        ev.make("upsert", "Table", qn, "LATIN1_TABLE", 5, {"description": "__CAFE__"})
    ).replace(b"__CAFE__", "café".encode("latin-1"))
    bound.append((qn.encode(), latin1))
    w.invalid.append(
        Invalid(latin1, "malformed_json", (BOUND_TENANT,), f"kafka:{BOUND_TOPIC}", qn, "binary")
    )
    garbage = bytes([0xFF, 0xFE, 0x00, 0x81]) + b"{not utf-8 at all\xc3\x28"
    shared.append((None, garbage))
    w.invalid.append(
        Invalid(garbage, "malformed_json", (UNROUTED,), f"kafka:{SHARED_TOPIC}", kind="binary")
    )

    # Malformed on the bound topic (its tenant's quarantine), and on the shared one.
    truncated = b'{"tenant": "globex", "event_id": '
    bound.append((None, truncated))
    w.invalid.append(Invalid(truncated, "malformed_json", (BOUND_TENANT,), f"kafka:{BOUND_TOPIC}"))
    shared.append((None, b"this is not json"))
    w.invalid.append(
        Invalid(b"this is not json", "malformed_json", (UNROUTED,), f"kafka:{SHARED_TOPIC}")
    )

    # A tenant name that is not one.
    ev = _Events("ACME!", start)
    bad_tenant = encode(ev.make("upsert", "Table", table_qn("acme", "BAD_TENANT"), "BT", 5))
    shared.append((None, bad_tenant))
    w.invalid.append(
        Invalid(
            bad_tenant,
            "bad_tenant",
            (UNROUTED,),
            f"kafka:{SHARED_TOPIC}",
            table_qn("acme", "BAD_TENANT"),
        )
    )

    # An acme event on globex's bound topic.
    ev = _Events("acme", start)
    qn = table_qn("acme", "WRONG_TOPIC")
    mismatch = encode(ev.make("upsert", "Table", qn, "WRONG_TOPIC", 5, event_id="acme-mismatch"))
    bound.append((qn.encode(), mismatch))
    w.invalid.append(
        Invalid(mismatch, "tenant_mismatch", (BOUND_TENANT,), f"kafka:{BOUND_TOPIC}", qn)
    )

    rng.shuffle(shared)
    rng.shuffle(bound)
    w.kafka = {SHARED_TOPIC: shared, BOUND_TOPIC: bound}
    w.late_kafka = {SHARED_TOPIC: late_shared, BOUND_TOPIC: late_bound}
    w.fresh_kafka = {SHARED_TOPIC: fresh_shared, BOUND_TOPIC: fresh_bound}
    return w


def _topic(tenant: str) -> str:
    return BOUND_TOPIC if tenant == BOUND_TENANT else SHARED_TOPIC


# --- the contract's state, computed independently ---------------------------------------------


def _rank(event: dict[str, Any]) -> tuple[datetime, str]:
    when = datetime.fromisoformat(event["event_time"].replace("Z", "+00:00"))
    return when, event["event_id"]


def expected_state(events: list[dict[str, Any]], tenant: str) -> dict[str, dict[str, Any]]:
    """CONTRACT.md §1 for one tenant: per qualified name, status, event_time and event_id of
    the latest event by (event_time, event_id) (delete → DELETED, upsert → ACTIVE); content
    (type, name, attributes, classifications, lineage) of the latest upsert, else of the
    latest delete. `event_time` as a datetime."""
    latest: dict[str, dict[str, Any]] = {}
    content: dict[str, dict[str, Any]] = {}
    for e in events:
        if e["tenant"] != tenant:
            continue
        qn = e["asset"]["qualified_name"]
        if qn not in latest or _rank(e) > _rank(latest[qn]):
            latest[qn] = e
        key = (e["op"] == "upsert", *_rank(e))
        if qn not in content or key > (content[qn]["op"] == "upsert", *_rank(content[qn])):
            content[qn] = e
    state: dict[str, dict[str, Any]] = {}
    for qn, last in latest.items():
        asset = content[qn]["asset"]
        record: dict[str, Any] = {
            "qualified_name": qn,
            "type_name": asset["type_name"],
            "name": asset["name"],
            "status": "DELETED" if last["op"] == "delete" else "ACTIVE",
            "attributes": asset.get("attributes", {}),
            "classifications": sorted(asset.get("classifications", [])),
            "event_time": _rank(last)[0],
            "event_id": last["event_id"],
        }
        if asset["type_name"] == "Process":
            record["inputs"] = asset.get("inputs", [])
            record["outputs"] = asset.get("outputs", [])
        state[qn] = record
    return state
