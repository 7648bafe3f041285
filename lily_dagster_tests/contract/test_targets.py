"""CONTRACT.md §5: the outbound webhook target, as the loopback receiver of the scenario saw
it. Targets (LILY_CONFIG): `audit-all` (every tenant; its first request answered 503),
`audit-acme` (tenants: [acme]) and `refusing` (tenants: [initech], answers 400)."""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

from lily_dagster_tests.contract.conftest import (
    ACME_PATH,
    ALL_PATH,
    REFUSE_PATH,
    TARGET_NAMES,
    TARGET_SECRETS,
    TARGET_TENANTS,
    Scenario,
    Snapshot,
)
from lily_dagster_tests.contract.outside import Delivery, strict_json
from lily_dagster_tests.contract.workload import TENANTS

CHANGE_FIELDS = {
    "qualified_name",
    "type_name",
    "change",
    "version",
    "name",
    "attributes",
    "classifications",
}
CHANGE_KINDS = {"created", "updated", "archived", "restored"}


def _acked(deliveries: list[Delivery], path: str) -> list[Delivery]:
    return [d for d in deliveries if d.path == path and 200 <= d.status < 300]


def _changes(deliveries: list[Delivery]) -> list[tuple[str, dict[str, Any]]]:
    """(tenant, change) of every change in `deliveries`, in the order they arrived."""
    out: list[tuple[str, dict[str, Any]]] = []
    for delivery in deliveries:
        body = delivery.json()
        out.extend((body["tenant"], change) for change in body["changes"])
    return out


def _latest(deliveries: list[Delivery]) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (tenant, qualified name), the change of highest version delivered."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for tenant, change in _changes(deliveries):
        key = (tenant, change["qualified_name"])
        if key not in latest or change["version"] > latest[key]["version"]:
            latest[key] = change
    return latest


def _assert_caught_up(
    scenario: Scenario,
    deliveries: list[Delivery],
    tenants: tuple[str, ...],
    snapshot: Snapshot | None = None,
) -> None:
    """The latest change delivered for each hub record carries the record's content."""
    latest = _latest(deliveries)
    behind = []
    for tenant in tenants:
        for record in scenario.hub_records(tenant, snapshot):
            change = latest.get((tenant, record["qualified_name"]))
            if change is None:
                behind.append((tenant, record["qualified_name"], "never delivered"))
                continue
            got, wanted = _content(change), _content(record)
            if got != wanted:
                behind.append((tenant, record["qualified_name"], f"{got} != {wanted}"))
    total = sum(len(scenario.hub_records(t)) for t in tenants)
    assert not behind, f"{len(behind)} of {total} records not caught up: {behind[:5]}"


def _content(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type_name": item["type_name"],
        "name": item["name"],
        "attributes": item["attributes"],
        "classifications": sorted(item["classifications"]),
    }


def test_every_hub_record_reached_the_target_when_run_until_idle_returned(
    scenario: Scenario,
) -> None:
    """Idle means every target caught up with the change log: for each record, a change
    carrying its current content had been delivered when the command returned."""
    assert scenario.run1.returncode == 0, scenario.run1.stderr[-2000:]
    _assert_caught_up(scenario, _acked(scenario.deliveries1, ALL_PATH), TENANTS)


def test_new_changes_reached_the_target_when_the_second_run_returned(
    scenario: Scenario,
) -> None:
    """Run 2 brought two new changes per tenant among replays: caught up again."""
    assert scenario.run2.returncode == 0, scenario.run2.stderr[-2000:]
    _assert_caught_up(scenario, _acked(scenario.deliveries2, ALL_PATH), TENANTS, scenario.after2)


def test_a_deleted_record_reaches_the_target_as_archived(scenario: Scenario) -> None:
    """The change kind is all a target learns of a record's status: the latest change of a
    DELETED record is `archived`, that of an ACTIVE one is not (checked after run 2, so that
    late deliveries do not count here)."""
    latest = _latest(_acked(scenario.deliveries2, ALL_PATH))
    wrong = []
    for tenant in TENANTS:
        for record in scenario.hub_records(tenant, scenario.after2):
            change = latest.get((tenant, record["qualified_name"]))
            kind = None if change is None else change["change"]
            if (kind == "archived") != (record["status"] == "DELETED"):
                wrong.append((record["qualified_name"], record["status"], kind))
    assert not wrong, f"(record, hub status, latest change delivered): {wrong[:6]}"


def test_a_target_limited_to_some_tenants_gets_all_of_theirs_and_nothing_else(
    scenario: Scenario,
) -> None:
    acked = _acked(scenario.deliveries2, ACME_PATH)
    assert {d.json()["tenant"] for d in acked} == {"acme"}
    _assert_caught_up(scenario, _acked(scenario.deliveries1, ACME_PATH), ("acme",))


def test_changes_arrive_in_version_order_per_record(scenario: Scenario) -> None:
    for path in (ALL_PATH, ACME_PATH):
        seen: dict[tuple[str, str], list[int]] = defaultdict(list)
        for tenant, change in _changes(_acked(scenario.deliveries2, path)):
            versions = seen[(tenant, change["qualified_name"])]
            if change["version"] not in versions:  # at least once: a resend is allowed
                versions.append(change["version"])
        assert seen
        unordered = {k: v for k, v in seen.items() if v != sorted(v)}
        assert not unordered, f"{path}: {unordered}"


def test_every_delivery_has_the_documented_body(scenario: Scenario) -> None:
    for path in (ALL_PATH, ACME_PATH, REFUSE_PATH):
        deliveries = [d for d in scenario.deliveries2 if d.path == path]
        assert deliveries, path
        for delivery in deliveries:
            body = strict_json(delivery.body)  # RFC 8259: no NaN or Infinity
            assert set(body) == {"tenant", "target", "changes"}, body.keys()
            assert body["target"] == TARGET_NAMES[path]
            assert body["tenant"] in TARGET_TENANTS[path]
            assert body["changes"]
            for change in body["changes"]:
                assert set(change) >= CHANGE_FIELDS, change
                assert change["change"] in CHANGE_KINDS, change


def test_every_delivery_is_signed_with_the_targets_secret(scenario: Scenario) -> None:
    deliveries = scenario.deliveries2
    assert deliveries
    bad = [
        (d.path, d.headers.get("x-lily-signature"))
        for d in deliveries
        if not d.signature_valid(TARGET_SECRETS[d.path])
    ]
    assert not bad, bad[:5]


def test_idempotency_key_is_unique_per_delivery_and_kept_on_its_retry(
    scenario: Scenario,
) -> None:
    deliveries = [d for d in scenario.deliveries2 if d.path != REFUSE_PATH]
    assert all(d.headers.get("idempotency-key") for d in deliveries)
    body_of: dict[str, bytes] = {}
    for delivery in deliveries:
        key = delivery.headers["idempotency-key"]
        assert body_of.setdefault(key, delivery.body) == delivery.body, f"key {key} reused"
    # The 503 answered to the first request was retried with the same key and body.
    first = [d for d in scenario.deliveries2 if d.path == ALL_PATH][:1]
    assert first and first[0].status == 503, "audit-all got no delivery"
    retried = [
        d
        for d in _acked(scenario.deliveries2, ALL_PATH)
        if d.headers["idempotency-key"] == first[0].headers["idempotency-key"]
    ]
    assert retried, "the delivery answered 503 was not sent again with its Idempotency-Key"
    assert retried[0].body == first[0].body


def test_a_4xx_answer_is_not_retried_and_does_not_block_idle(scenario: Scenario) -> None:
    refused = [d for d in scenario.deliveries2 if d.path == REFUSE_PATH]
    keys = [d.headers.get("idempotency-key") for d in refused]
    assert len(keys) == len(set(keys)), "a refused delivery was sent again"
    # Every change was offered once (then dead-lettered), and the run still went idle.
    offered = {(t, c["qualified_name"]) for t, c in _changes(refused)}
    records = {("initech", r["qualified_name"]) for r in scenario.hub_records("initech")}
    assert records <= offered
    assert scenario.run1.returncode == 0 and scenario.run2.returncode == 0


def test_replaying_events_that_change_nothing_sends_no_new_changes(scenario: Scenario) -> None:
    """Run 2 changed no record (the envelope tests check that): no change may follow
    another of the same record that says the same thing. (Told by content, not by which run
    sent it, so that a delivery run 1 left behind does not count here.)"""

    def content(change: dict[str, Any]) -> tuple[Any, ...]:
        return (change["change"], repr(_content(change)))

    for path in (ALL_PATH, ACME_PATH):
        history: dict[tuple[str, str], dict[int, dict[str, Any]]] = defaultdict(dict)
        for tenant, change in _changes(_acked(scenario.deliveries2, path)):
            history[(tenant, change["qualified_name"])].setdefault(change["version"], change)
        repeated = []
        for key, versions in history.items():
            ordered = [versions[v] for v in sorted(versions)]
            repeated += [
                (key, b["version"])
                for a, b in itertools.pairwise(ordered)
                if content(a) == content(b)
            ]
        assert not repeated, f"{path}: changes that change nothing: {repeated[:5]}"
