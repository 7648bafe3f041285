"""A hundred tenants through Kafka and `lily run --until-idle`, from the outside: every tenant's
events reach its own hub and quarantine, and a tenant whose batch blocks holds none of the other
99 back. (More tenants than LILY_RUN_MAX_TENANTS: a tick's work is split into runs by block of
tenant partitions.)"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from lily_dagster_tests.contract import outside
from lily_dagster_tests.support.envelopes import envelope

TENANTS = [f"t{n:03d}" for n in range(100)]
BLOCKED = "t042"  # five of its six events do not parse: its batch blocks
SCHEMA = "default/snowflake/1700000000/DB/SCH"


def events_of(tenant: str) -> list[bytes]:
    table = f"{SCHEMA}/ORDERS"
    valid = [
        envelope(table, tenant=tenant, event_id=f"{tenant}-table"),
        *(
            envelope(
                f"{table}/C{i}",
                tenant=tenant,
                event_id=f"{tenant}-c{i}",
                type_name="Column",
                attributes={"parent_qualified_name": table, "data_type": "VARCHAR"},
            )
            for i in range(2)
        ),
    ]
    bad = envelope(f"{SCHEMA}/X", tenant=tenant, event_id=f"{tenant}-bad", type_name="not a type")
    invalid = [bad]
    if tenant == BLOCKED:
        valid = valid[:1]
        invalid = [{**bad, "event_id": f"{tenant}-bad{i}"} for i in range(5)]
    return [json.dumps(e).encode() for e in (*valid, *invalid)]


def test_a_hundred_tenants_each_reach_their_own_hub_and_one_blocked_holds_none_back(
    tmp_path: Path,
) -> None:
    topic = "lily.metadata.events"
    port = outside.free_port()
    env = outside.clean_environment(
        LILY_HOME=str(tmp_path / "home"),
        LILY_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}",
        LILY_KAFKA_TOPICS=topic,
        LILY_BLOCK_MIN_EVENTS="5",
        LILY_BLOCK_REJECT_SHARE="0.5",
    )
    with outside.processes() as started:
        started.append(outside.start_broker(port, env, tmp_path / "broker.log"))
        messages = [(t.encode(), value) for t in TENANTS for value in events_of(t)]
        outside.produce(f"127.0.0.1:{port}", topic, messages)
        run = outside.run_until_idle(env, timeout_s=400)
    summary = run.summary()
    # At least one run per block of 50 tenant partitions (more when the events span more
    # than one tick, as on a loaded machine), and the blocked tenant's run of its own, which
    # fails its check (so `lily run` exits 1).
    runs = summary["runs"]
    assert (runs["failure"], runs["canceled"]) == (1, 0), run.stderr[-3000:]
    assert runs["success"] >= 2, run.stderr[-3000:]
    assert run.returncode == 1
    figures = summary["tenants"]
    for tenant in TENANTS:
        if tenant == BLOCKED:
            continue
        assert figures[tenant]["hub_active"] == 3, (tenant, figures[tenant])
        assert figures[tenant]["quarantined_by_reason"] == {"bad_type_name": 1}, tenant
        assert figures[tenant]["pending_batches"] == 0, tenant
    # The blocked tenant's batch waits for an operator, nothing of it applied or lost.
    assert figures[BLOCKED]["hub_active"] == 0 and figures[BLOCKED]["pending_batches"] == 1, (
        figures[BLOCKED]
    )
    assert outside.hub_export(env, BLOCKED) == []
    for tenant in (TENANTS[0], TENANTS[41], TENANTS[43], TENANTS[-1]):
        names = Counter(r["type_name"] for r in outside.hub_export(env, tenant))
        assert names == {"Table": 1, "Column": 2}, tenant
        (rejected,) = outside.quarantine_export(env, tenant)
        assert (rejected["event_id"], rejected["reason"]) == (f"{tenant}-bad", "bad_type_name")
