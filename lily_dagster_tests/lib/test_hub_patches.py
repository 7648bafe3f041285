"""Partial changes (`asset.attributes.lily_patch`) in LocalHub: a patch changes only what it
names, never creates a record, and obeys the same (event_time, event_id) ordering as full
upserts."""

from __future__ import annotations

import itertools
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from lily_dagster.lib.enrichment import normalise_owners
from lily_dagster.lib.envelope import decode_envelopes
from lily_dagster.lib.hub.base import UpsertResult
from lily_dagster.lib.hub.local import LocalHub
from lily_dagster_tests.support.envelopes import ORDERS, T0, at, envelope

QN = ORDERS


def full(
    event_id: str,
    minutes: float,
    *,
    qn: str = QN,
    op: str = "upsert",
    attributes: dict[str, Any] | None = None,
    classifications: list[str] | None = None,
) -> str:
    if attributes is None:
        attributes = {"description": "one row per order", "owner_users": ["jdoe"], "row_count": 10}
    env = envelope(
        qn,
        event_id=event_id,
        op=op,
        event_time=at(minutes),
        attributes=attributes,
        classifications=classifications if classifications is not None else ["PII"],
    )
    return json.dumps(env)


def patch(event_id: str, minutes: float, lily_patch: dict[str, Any], *, qn: str = QN) -> str:
    """A partial change as chat commands and vendor webhooks produce it."""
    env = envelope(
        qn,
        event_id=event_id,
        source="slack",
        event_time=at(minutes),
        type_name="Asset",
        attributes={"lily_patch": lily_patch},
    )
    return json.dumps(env)


def frame(*payloads: str) -> pl.DataFrame:
    decoded = decode_envelopes(
        list(payloads),
        [f"test:{i}" for i in range(len(payloads))],
        tenant="acme",
        max_event_bytes=1 << 20,
    )
    assert decoded.rejects.is_empty(), decoded.rejects.to_dicts()
    return normalise_owners(decoded.events)


@pytest.fixture
def hub(tmp_path: Path) -> LocalHub:
    return LocalHub(tmp_path / "hub")


def apply(hub: LocalHub, *payloads: str) -> UpsertResult:
    return hub.upsert("acme", frame(*payloads))


def record(hub: LocalHub, qn: str = QN) -> dict[str, Any]:
    found = {r["qualified_name"]: r for r in hub.export("acme")}
    return found[qn]


def stored(hub: LocalHub, qn: str = QN) -> dict[str, Any]:
    """The record with its bookkeeping columns (version, updated_at, content_*)."""
    rows = hub.records("acme").filter(pl.col("qualified_name") == qn).to_dicts()
    assert len(rows) == 1
    return rows[0]


# --- what a patch changes -----------------------------------------------------------------------


def test_set_changes_well_known_and_extra_attributes_only(hub: LocalHub) -> None:
    apply(hub, full("f1", 0))
    result = apply(
        hub,
        patch(
            "p1",
            5,
            {
                "set": {
                    "certificate_status": "VERIFIED",
                    "owner_users": ["asmith"],
                    "certificate_updated_by": "jdoe",
                    "data_quality": {"state": "open", "severity": "SEV-1"},
                }
            },
        ),
    )
    assert result.updated == 1 and result.created == 0
    assert result.rejects is None or result.rejects.is_empty()
    rec = record(hub)
    assert rec["attributes"] == {
        "description": "one row per order",  # untouched
        "row_count": 10,  # untouched
        "owner_users": ["asmith"],
        "certificate_status": "VERIFIED",
        "certificate_updated_by": "jdoe",
        "data_quality": {"state": "open", "severity": "SEV-1"},
    }
    assert rec["classifications"] == ["PII"]
    assert rec["type_name"] == "Table"  # a patch never changes type or name
    assert rec["name"] == "ORDERS"
    assert rec["status"] == "ACTIVE"
    assert rec["event_id"] == "p1"
    assert rec["event_time"] == at(5)
    assert stored(hub)["version"] == 2


def test_set_overwrites_an_existing_extra_attribute(hub: LocalHub) -> None:
    apply(hub, full("f1", 0))
    apply(hub, patch("p1", 1, {"set": {"row_count": 99, "description": "orders"}}))
    assert record(hub)["attributes"] == {
        "description": "orders",
        "owner_users": ["jdoe"],
        "row_count": 99,
    }


def test_add_and_remove_classifications_without_duplicates(hub: LocalHub) -> None:
    apply(hub, full("f1", 0, classifications=["PII", "Finance"]))
    apply(
        hub,
        patch(
            "p1",
            1,
            {
                "add_classifications": ["PII", "GDPR", "GDPR"],
                "remove_classifications": ["Finance", "NotThere"],
            },
        ),
    )
    assert record(hub)["classifications"] == ["PII", "GDPR"]
    apply(hub, patch("p2", 2, {"remove_classifications": ["PII", "GDPR"]}))
    assert record(hub)["classifications"] == []
    assert record(hub)["attributes"]["description"] == "one row per order"


def test_two_patches_in_one_batch_apply_in_event_time_order(hub: LocalHub) -> None:
    apply(hub, full("f1", 0))
    # Arrival order is the reverse of event time: the later one must win.
    apply(
        hub,
        patch("p-late", 3, {"set": {"certificate_status": "DEPRECATED"}}),
        patch(
            "p-early", 2, {"set": {"certificate_status": "VERIFIED"}, "add_classifications": ["X"]}
        ),
    )
    rec = record(hub)
    assert rec["attributes"]["certificate_status"] == "DEPRECATED"
    assert rec["classifications"] == ["PII", "X"]
    assert rec["event_id"] == "p-late"


# --- ordering against full upserts --------------------------------------------------------------


def test_patch_older_than_the_latest_full_upsert_changes_nothing(hub: LocalHub) -> None:
    apply(hub, full("f2", 10))
    before = stored(hub)
    result = apply(hub, patch("p1", 5, {"set": {"certificate_status": "VERIFIED"}}))
    assert result.unchanged == 1 and result.changed == 0
    assert stored(hub) == before


def test_later_full_upsert_replaces_patched_content(hub: LocalHub) -> None:
    apply(hub, full("f1", 0))
    apply(hub, patch("p1", 5, {"set": {"certificate_status": "VERIFIED", "x": 1}}))
    apply(hub, full("f2", 10, attributes={"description": "rebuilt"}, classifications=[]))
    rec = record(hub)
    assert rec["attributes"] == {"description": "rebuilt"}
    assert rec["classifications"] == []
    assert rec["event_id"] == "f2"


def test_full_upsert_and_newer_patch_in_one_batch(hub: LocalHub) -> None:
    # The patch arrives first in the batch, for an asset the hub does not hold yet.
    result = apply(
        hub,
        patch("p1", 5, {"set": {"certificate_status": "VERIFIED"}, "add_classifications": ["Y"]}),
        full("f1", 0),
    )
    assert result.created == 1
    assert result.rejects is None or result.rejects.is_empty()
    rec = record(hub)
    assert rec["attributes"]["certificate_status"] == "VERIFIED"
    assert rec["attributes"]["description"] == "one row per order"
    assert rec["classifications"] == ["PII", "Y"]
    assert rec["event_id"] == "p1"


def test_full_upsert_and_older_patch_in_one_batch(hub: LocalHub) -> None:
    apply(hub, full("f1", 5), patch("p1", 0, {"set": {"certificate_status": "VERIFIED"}}))
    rec = record(hub)
    assert "certificate_status" not in rec["attributes"]
    assert rec["event_id"] == "f1"


MISSING = "default/snowflake/1700000000/DB/SCH/MISSING"


def test_patch_for_an_unknown_asset_waits_and_creates_nothing(hub: LocalHub) -> None:
    apply(hub, full("f1", 0))
    result = apply(
        hub, patch("p-missing", 5, {"set": {"certificate_status": "VERIFIED"}}, qn=MISSING)
    )
    assert result.pending == 1
    assert result.changed == 0
    assert result.rejects is None or result.rejects.is_empty()
    assert {r["qualified_name"] for r in hub.export("acme")} == {QN}
    # The record arrives later (events arrive in any order): the waiting change applies.
    apply(hub, full("f-missing", 1, qn=MISSING))
    rec = record(hub, MISSING)
    assert rec["attributes"]["certificate_status"] == "VERIFIED"
    assert rec["attributes"]["description"] == "one row per order"
    assert rec["event_id"] == "p-missing"


def test_patch_whose_record_never_arrives_is_quarantined_as_orphan(tmp_path: Path) -> None:
    hub = LocalHub(tmp_path / "hub", orphan_wait_s=60)
    raw = patch("p-missing", 5, {"add_classifications": ["PII"]}, qn=MISSING)
    first = hub.upsert("acme", frame(raw), now=T0)
    assert first.pending == 1
    assert list(hub.export("acme")) == []
    within = hub.upsert("acme", frame(full("f1", 0)), now=T0 + timedelta(seconds=30))
    assert within.rejects is None or within.rejects.is_empty()
    after = hub.upsert("acme", frame(full("f2", 1)), now=T0 + timedelta(seconds=61))
    assert after.rejects is not None
    rejects = after.rejects.to_dicts()
    assert [r["reason"] for r in rejects] == ["orphan"]
    assert rejects[0]["event_id"] == "p-missing"
    assert rejects[0]["raw"] == raw
    assert MISSING in rejects[0]["detail"]
    # Quarantined once: a later batch does not report it again, nor does the record appear.
    again = hub.upsert("acme", frame(full("f3", 2)), now=T0 + timedelta(seconds=120))
    assert again.rejects is None or again.rejects.is_empty()
    assert {r["qualified_name"] for r in hub.export("acme")} == {QN}


def test_patch_on_a_deleted_record_keeps_it_deleted(hub: LocalHub) -> None:
    apply(hub, full("f1", 0))
    apply(hub, full("d1", 1, op="delete"))
    assert record(hub)["status"] == "DELETED"
    apply(hub, patch("p1", 2, {"set": {"certificate_status": "VERIFIED"}}))
    assert record(hub)["status"] == "DELETED"
    # ... and a later full upsert still restores it.
    apply(hub, full("f2", 3))
    assert record(hub)["status"] == "ACTIVE"


def test_reapplying_the_same_patch_changes_nothing(hub: LocalHub) -> None:
    apply(hub, full("f1", 0))
    p = patch("p1", 5, {"set": {"certificate_status": "VERIFIED"}, "add_classifications": ["X"]})
    apply(hub, p)
    once = stored(hub)
    result = apply(hub, p)
    assert result.changed == 0 and result.unchanged == 1
    twice = stored(hub)
    assert twice["version"] == once["version"]
    assert twice["updated_at"] == once["updated_at"]
    assert twice == once


def test_patch_arriving_before_an_older_full_upsert_gives_the_same_state(
    hub: LocalHub, tmp_path: Path
) -> None:
    # CONTRACT §1: the same events in any order give the same hub state. Events: a full
    # upsert at t0, a full upsert at t5 that changes the description, a patch at t10.
    events = [
        full("f1", 0),
        full("f2", 5, attributes={"description": "v2"}),
        patch("p1", 10, {"set": {"certificate_status": "VERIFIED"}}),
    ]
    in_order = LocalHub(tmp_path / "in-order")
    for e in events:
        in_order.upsert("acme", frame(e))
    late_full = LocalHub(tmp_path / "late-full")
    for e in (events[0], events[2], events[1]):
        late_full.upsert("acme", frame(e))
    assert content(in_order)["attributes"] == {
        "description": "v2",
        "certificate_status": "VERIFIED",
    }
    assert content(late_full) == content(in_order)


def content(h: LocalHub) -> dict[str, Any]:
    r = {x["qualified_name"]: x for x in h.export("acme")}[QN]
    return {k: v for k, v in r.items() if k != "updated_at"}


def test_any_arrival_order_and_batching_gives_the_same_state(tmp_path: Path) -> None:
    events = [
        full("f1", 0, classifications=["PII"]),
        patch("p1", 3, {"set": {"certificate_status": "VERIFIED"}, "add_classifications": ["X"]}),
        full("d1", 2, op="delete"),
        patch("p0", 1, {"set": {"description": "patched early"}}),
        full("f2", 2.5, attributes={"description": "v2"}, classifications=[]),
    ]
    states = []
    for i, order in enumerate(itertools.permutations(range(len(events)))):
        if i % 7:  # a spread of 18 of the 120 orders keeps this fast
            continue
        h = LocalHub(tmp_path / f"order-{i}")
        ordered = [events[j] for j in order]
        # Alternate between one event per batch and two batches.
        if i % 2:
            for e in ordered:
                h.upsert("acme", frame(e))
        else:
            h.upsert("acme", frame(*ordered[:2]))
            h.upsert("acme", frame(*ordered[2:]))
        states.append((order, content(h)))
    expected = states[0][1]
    assert expected["status"] == "ACTIVE"  # f2 (t2.5) restores after the delete (t2)
    assert expected["attributes"] == {"description": "v2", "certificate_status": "VERIFIED"}
    assert expected["classifications"] == ["X"]
    assert expected["event_id"] == "p1"
    for order, state in states:
        assert state == expected, order


# --- invalid patch shapes are refused at decode ---------------------------------------------------


@pytest.mark.parametrize(
    "lily_patch",
    [
        {"bogus": 1},
        {"set": {"owner_users": "jdoe"}},
        {"set": {"owner_groups": [1, 2]}},
        {"set": {"description": 42}},
        {"add_classifications": "PII"},
        {"remove_classifications": [None]},
        {"set": ["certificate_status", "VERIFIED"]},
        "certify",
    ],
    ids=[
        "unknown-key",
        "owner-users-not-list",
        "owner-groups-not-strings",
        "description-not-string",
        "add-not-list",
        "remove-null",
        "set-not-object",
        "not-object",
    ],
)
def test_invalid_patch_shapes_are_rejected_at_decode_as_wrong_type(lily_patch: Any) -> None:
    raw = patch("p-bad", 0, {})
    data = json.loads(raw)
    data["asset"]["attributes"]["lily_patch"] = lily_patch
    decoded = decode_envelopes(
        [json.dumps(data)], ["test:0"], tenant="acme", max_event_bytes=1 << 20
    )
    assert decoded.events.is_empty()
    rejects = decoded.rejects.to_dicts()
    assert [r["reason"] for r in rejects] == ["wrong_type"]
    assert rejects[0]["event_id"] == "p-bad"
    assert "lily_patch" in rejects[0]["detail"]


def test_valid_patch_decodes_to_the_patch_column() -> None:
    events = frame(patch("p1", 0, {"set": {"certificate_status": "VERIFIED"}}))
    assert json.loads(events.get_column("patch")[0]) == {
        "set": {"certificate_status": "VERIFIED"},
        "add_classifications": [],
        "remove_classifications": [],
    }
    plain = frame(full("f1", 0))
    assert plain.get_column("patch").to_list() == [None]
