"""CONTRACT.md §1, the envelope's semantics, on both hubs: what `lily hub export` and `lily
quarantine export` show after one `lily run --until-idle` over the workload."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from lily_dagster_tests.contract import outside
from lily_dagster_tests.contract.conftest import QUARANTINES, Scenario, Snapshot
from lily_dagster_tests.contract.workload import (
    BOUND_TENANT,
    PII_SENSITIVE_NAMES,
    TENANTS,
    Invalid,
    column_qn,
    expected_state,
    table_qn,
)

COMPARED = ("type_name", "name", "status", "attributes", "event_id")
# Not compared by _comparable: the key, and tags (which a default hook may add).
IDENTITY = ("qualified_name", "classifications")


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    """A hub export record in the form `expected_state` computes."""
    out = {k: record.get(k) for k in COMPARED}
    out["event_time"] = outside.rfc3339(record["event_time"])
    if record["type_name"] == "Process":
        out["inputs"], out["outputs"] = record.get("inputs"), record.get("outputs")
    return out


def _expected(scenario: Scenario, tenant: str) -> dict[str, dict[str, Any]]:
    return expected_state(scenario.workload.valid, tenant)


def _assert_state(
    scenario: Scenario, snapshot: Snapshot, events: list[dict[str, Any]], tenant: str
) -> None:
    expected = expected_state(events, tenant)
    got = scenario.hub_by_name(tenant, snapshot)
    assert sorted(got) == sorted(expected), f"{tenant}: other qualified names in the hub"
    for qn, want in expected.items():
        comparable = {k: v for k, v in want.items() if k not in IDENTITY}
        assert _comparable(got[qn]) == comparable, f"{tenant} {qn}"
        if want["name"] not in PII_SENSITIVE_NAMES:
            # (PII-named columns are judged by the PII tests: a default hook adds tags.)
            assert sorted(got[qn]["classifications"]) == want["classifications"], qn


def test_hub_holds_one_record_per_qualified_name_with_the_contracts_state(
    scenario: Scenario,
) -> None:
    for tenant in TENANTS:
        _assert_state(scenario, scenario.after1, scenario.workload.valid, tenant)


def test_latest_event_time_wins_over_an_older_update_arriving_after_it(
    scenario: Scenario,
) -> None:
    for tenant in TENANTS:
        orders = scenario.hub_by_name(tenant)[table_qn(tenant, "ORDERS")]
        newest = max(
            (
                e
                for e in scenario.workload.events_of(tenant)
                if e["asset"]["qualified_name"] == table_qn(tenant, "ORDERS")
            ),
            key=lambda e: outside.rfc3339(e["event_time"]),
        )
        assert orders["attributes"]["description"] == newest["asset"]["attributes"]["description"]
        assert orders["event_id"] == newest["event_id"]


def test_equal_event_times_are_decided_by_the_larger_event_id(scenario: Scenario) -> None:
    for tenant in TENANTS:
        customers = scenario.hub_by_name(tenant)[table_qn(tenant, "CUSTOMERS")]
        tie = sorted(
            (e for e in scenario.workload.events_of(tenant) if "-tie-" in e["event_id"]),
            key=lambda e: e["event_id"],
        )
        assert tie[0]["event_time"] == tie[-1]["event_time"]
        assert customers["event_id"] == tie[-1]["event_id"]
        assert (
            customers["attributes"]["description"] == tie[-1]["asset"]["attributes"]["description"]
        )


def test_a_delete_keeps_the_record_as_deleted(scenario: Scenario) -> None:
    for tenant in TENANTS:
        hub = scenario.hub_by_name(tenant)
        deleted = {qn for qn, r in _expected(scenario, tenant).items() if r["status"] == "DELETED"}
        # A table (its columns stay), a column, and an asset that was never upserted.
        assert table_qn(tenant, "LEGACY_ORDERS") in deleted
        assert {qn for qn, r in hub.items() if r["status"] == "DELETED"} == deleted
        legacy_columns = [
            qn for qn in hub if qn.startswith(table_qn(tenant, "LEGACY_ORDERS") + "/")
        ]
        assert legacy_columns and all(hub[qn]["status"] == "ACTIVE" for qn in legacy_columns)


def test_a_later_upsert_restores_a_deleted_record(scenario: Scenario) -> None:
    for tenant in TENANTS:
        archive = scenario.hub_by_name(tenant)[table_qn(tenant, "ARCHIVE_2019")]
        assert archive["status"] == "ACTIVE"
        assert archive["attributes"]["description"] == "archive, restored"


def test_the_same_events_in_other_orders_give_the_same_records(scenario: Scenario) -> None:
    """The three tenants get the same events (but for their names) in different orders:
    shuffled with each other on a shared topic, on a bound topic, split over the webhook."""

    def normalised(tenant: str) -> dict[str, Any]:
        pattern = re.compile(rf"\b{tenant}\b|{tenant.upper()}", re.IGNORECASE)
        sent = _expected(scenario, tenant)  # (what else is there is another test's concern)
        out = {}
        for qn, record in scenario.hub_by_name(tenant).items():
            if qn not in sent:
                continue
            record = {k: v for k, v in record.items() if k != "updated_at"}
            out[pattern.sub("T", qn)] = pattern.sub("T", repr(sorted(record.items())))
        return out

    reference = normalised(TENANTS[0])
    for tenant in TENANTS[1:]:
        assert normalised(tenant) == reference, tenant


def test_replaying_everything_in_reverse_order_with_late_stale_events_changes_nothing(
    scenario: Scenario,
) -> None:
    """Run 2: the same Kafka messages again in reverse order, the same webhook posts, events
    older than what the hub holds, and two new changes per tenant. Not a field of any other
    record changes, `updated_at` included; the new changes are applied."""
    w = scenario.workload
    assert scenario.run2.returncode == 0, scenario.run2.stderr[-2000:]
    touched = {e["asset"]["qualified_name"] for e in w.fresh}
    for tenant in TENANTS:
        # (The late events are older than the current state by construction.)
        assert expected_state(w.valid + w.late, tenant) == _expected(scenario, tenant)
        first = scenario.hub_by_name(tenant, scenario.after1)
        second = scenario.hub_by_name(tenant, scenario.after2)
        assert {q: r for q, r in second.items() if q not in touched} == {
            q: r for q, r in first.items() if q not in touched
        }, tenant
        expected = expected_state(w.valid + w.late + w.fresh, tenant)
        for qn in touched & set(expected):
            want = {k: v for k, v in expected[qn].items() if k not in IDENTITY}
            assert qn in second and _comparable(second[qn]) == want, qn
            if qn in first:
                updated = outside.rfc3339(second[qn]["updated_at"])
                assert updated > outside.rfc3339(first[qn]["updated_at"]), qn


def test_children_arriving_before_their_parents_are_not_rejected(scenario: Scenario) -> None:
    for tenant in TENANTS:
        hub = scenario.hub_by_name(tenant)
        early = [
            column_qn(tenant, "CUSTOMERS", c)
            for c in ("CUSTOMER_ID", "customer_email", "cc_num", "iban", "REGION_CODE")
        ]
        assert all(hub[qn]["status"] == "ACTIVE" for qn in early)
        quarantined = {q.get("event_id") for q in scenario.quarantined(tenant)}
        sent_first = {
            e["event_id"]
            for e in scenario.workload.events_of(tenant)
            if e["asset"]["qualified_name"] in early
        }
        assert not quarantined & sent_first


def test_invalid_events_never_reach_the_hub(scenario: Scenario) -> None:
    named = {i.qualified_name for i in scenario.workload.invalid if i.qualified_name}
    assert named
    for tenant in TENANTS:
        assert not named & set(scenario.hub_by_name(tenant)), tenant


def _find(scenario: Scenario, invalid: Invalid) -> dict[str, Any] | None:
    """The quarantine entry of `invalid` (by its exact bytes) in one of its quarantines."""
    for tenant in invalid.quarantines:
        for entry in scenario.quarantined(tenant):
            raw = entry.get("raw")
            if raw is not None and raw.encode() == invalid.raw:
                return entry
            if raw is None and entry.get("raw_base64") == outside.b64(invalid.raw):
                return entry
    return None


def test_every_invalid_event_is_quarantined_with_its_reason_and_raw_payload(
    scenario: Scenario,
) -> None:
    missing, wrong = [], []
    for invalid in scenario.workload.invalid:
        entry = _find(scenario, invalid)
        if entry is None:
            missing.append((invalid.via, invalid.reason, invalid.raw[:80]))
        elif entry["reason"] != invalid.reason:
            wrong.append((invalid.reason, entry["reason"], entry.get("detail")))
    assert not missing, f"not in the quarantine (or raw not byte-exact): {missing}"
    assert not wrong, f"wrong reasons (expected, got, detail): {wrong}"


def test_nan_and_infinity_are_refused_as_malformed_json(scenario: Scenario) -> None:
    literals = [i for i in scenario.workload.invalid if i.kind == "literal"]
    assert len(literals) == 4
    for invalid in literals:
        entry = _find(scenario, invalid)
        assert entry is not None, f"{invalid.raw[:120]!r} is in no quarantine"
        assert entry["reason"] == "malformed_json", entry


def test_non_utf8_messages_are_kept_byte_exact(scenario: Scenario) -> None:
    binary = [i for i in scenario.workload.invalid if i.kind == "binary"]
    assert len(binary) == 2
    for invalid in binary:
        entries = [e for t in invalid.quarantines for e in scenario.quarantined(t)]
        found = [e for e in entries if e.get("raw_base64") == outside.b64(invalid.raw)]
        assert found, f"{invalid.raw[:40]!r}: no entry with its bytes in raw_base64"
        assert found[0]["raw"] is None and found[0]["reason"] == "malformed_json"


def test_an_event_of_another_tenant_on_a_bound_topic_is_quarantined_there(
    scenario: Scenario,
) -> None:
    (mismatch,) = [i for i in scenario.workload.invalid if i.reason == "tenant_mismatch"]
    reasons = Counter(e["reason"] for e in scenario.quarantined(BOUND_TENANT))
    assert reasons["tenant_mismatch"] >= 1
    entry = _find(scenario, mismatch)
    assert entry is not None and entry["reason"] == "tenant_mismatch"
    assert mismatch.qualified_name not in scenario.hub_by_name("acme")


def test_every_export_line_is_strict_json(scenario: Scenario) -> None:
    """RFC 8259: no NaN or Infinity, one object per line (what any JSON parser other than
    Python's lenient default demands), for every hub and quarantine export."""
    for snap in (scenario.after1, scenario.after2):
        for text in [*snap.hub.values(), *snap.quarantine.values()]:
            outside.json_lines(text)
    # Every tenant, and _unrouted, had invalid events: no export was empty.
    assert all(scenario.after1.quarantine[t].strip() for t in QUARANTINES)
