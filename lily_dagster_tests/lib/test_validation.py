"""split_valid + envelope_rules: row-level rules, first failing rule names the reason."""

from __future__ import annotations

import json
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from lily_dagster.lib.envelope import EVENT_SCHEMA, REJECT_SCHEMA, decode_envelopes, empty_events
from lily_dagster.lib.reasons import Reason
from lily_dagster.lib.validation import envelope_rules, split_valid
from lily_dagster_tests.support import envelopes

RULE_NAMES = [
    "tenant_format",
    "tenant_binding",
    "event_id_not_empty",
    "type_name_not_empty",
    "qualified_name_not_empty",
    "name_not_empty",
    "event_id_bounded",
    "name_bounded",
    "qualified_name_bounded",
    "type_name_format",
    "qualified_name_structure",
    "parent_is_prefix",
]


def envelope(**fields: Any) -> str:
    """A valid Table envelope as text (name ORDERS whatever the qualified name); `fields`
    override the shared builder's."""
    defaults = {"event_id": "e1", "name": "ORDERS"}
    qualified_name = fields.pop("qualified_name", "default/snowflake/1/DB/SCH/ORDERS")
    return json.dumps(envelopes.envelope(qualified_name, **{**defaults, **fields}))


def events_of(payloads: list[str]) -> pl.DataFrame:
    result = decode_envelopes(
        payloads, [f"o{i}" for i in range(len(payloads))], tenant="acme", max_event_bytes=1 << 20
    )
    assert result.rejects.is_empty()
    assert result.events.height == len(payloads)
    return result.events


def reason_of(payload: str, expected_tenant: str | None = "acme") -> str | None:
    result = split_valid(events_of([payload]), envelope_rules(expected_tenant), "acme")
    assert result.valid.height + result.rejects.height == 1
    if result.rejects.is_empty():
        return None
    row = result.rejects.row(0, named=True)
    assert row["detail"]
    return str(row["reason"])


def test_rule_names_in_declaration_order() -> None:
    assert [r.name for r in envelope_rules("acme")] == RULE_NAMES
    assert [r.name for r in envelope_rules(None)] == [
        n for n in RULE_NAMES if n != "tenant_binding"
    ]


@pytest.mark.parametrize(
    "tenant",
    ["Acme", "-acme", "ac me", "acme_corp", "a" * 64, "acme\n", "acm\u00e9", "acme.corp"],
    ids=["upper", "leading-dash", "space", "underscore", "64-chars", "newline", "accent", "dot"],
)
def test_bad_tenant(tenant: str) -> None:
    # bad_tenant even when no transport binding is known
    assert reason_of(envelope(tenant=tenant), expected_tenant=None) == Reason.BAD_TENANT


@pytest.mark.parametrize("tenant", ["acme", "a", "0", "a" * 63, "acme-corp-2"])
def test_good_tenant_names(tenant: str) -> None:
    assert reason_of(envelope(tenant=tenant), expected_tenant=None) is None


def test_tenant_mismatch() -> None:
    assert reason_of(envelope(tenant="globex"), expected_tenant="acme") == Reason.TENANT_MISMATCH
    assert reason_of(envelope(tenant="globex"), expected_tenant="globex") is None
    assert reason_of(envelope(tenant="globex"), expected_tenant=None) is None


@pytest.mark.parametrize(
    "overrides",
    [
        {"event_id": ""},
        {"event_id": "   "},
        {"type_name": ""},
        {"qualified_name": ""},
        {"qualified_name": " \t "},
        {"name": ""},
    ],
    ids=[
        "event_id",
        "event_id-blank",
        "type_name",
        "qualified_name",
        "qualified_name-blank",
        "name",
    ],
)
def test_empty_field(overrides: dict[str, str]) -> None:
    assert reason_of(envelope(**overrides)) == Reason.EMPTY_FIELD


@pytest.mark.parametrize(
    ("field", "limit"), [("event_id", 256), ("name", 1_024), ("qualified_name", 4_096)]
)
def test_field_too_long(field: str, limit: int) -> None:
    # A type without a qualified-name structure rule, so only the bound is tested.
    kind = "TableauDashboard"
    assert reason_of(envelope(type_name=kind, **{field: "x" * limit})) is None
    assert (
        reason_of(envelope(type_name=kind, **{field: "x" * (limit + 1)})) == Reason.FIELD_TOO_LONG
    )
    # the bound is in characters, not bytes
    assert reason_of(envelope(type_name=kind, **{field: "\u00e9" * limit})) is None


@pytest.mark.parametrize(
    "type_name",
    ["column", "Column Name", "1Table", "Table-View", "_Table", "T" * 129, "Tab\u00e9"],
    ids=["lower", "space", "digit-first", "dash", "underscore-first", "129-chars", "accent"],
)
def test_bad_type_name(type_name: str) -> None:
    assert reason_of(envelope(type_name=type_name)) == Reason.BAD_TYPE_NAME


@pytest.mark.parametrize(
    "type_name",
    ["Table", "Column", "Process", "PowerBIDashboard", "T", "Snowflake_Pipe", "T" * 128],
)
def test_good_type_names(type_name: str) -> None:
    # A Column's qualified name has one segment more than a Table's.
    qualified_name = "default/snowflake/1/DB/SCH/ORDERS" + ("/ID" if type_name == "Column" else "")
    assert reason_of(envelope(type_name=type_name, qualified_name=qualified_name)) is None


@pytest.mark.parametrize(
    ("overrides", "reason", "detail_part"),
    [
        # bad tenant also mismatches, and has an empty name: the format rule comes first
        ({"tenant": "Bad!", "name": ""}, Reason.BAD_TENANT, "tenant Bad!"),
        ({"tenant": "globex", "name": "", "type_name": "bad"}, Reason.TENANT_MISMATCH, "globex"),
        # an empty type_name is also not PascalCase: emptiness is reported
        ({"type_name": ""}, Reason.EMPTY_FIELD, "type_name is empty"),
        ({"name": "", "event_id": "x" * 300}, Reason.EMPTY_FIELD, "name is empty"),
        ({"event_id": "x" * 300, "type_name": "bad"}, Reason.FIELD_TOO_LONG, "event_id has 300"),
        (
            {"name": "n" * 2_000, "qualified_name": "q" * 5_000},
            Reason.FIELD_TOO_LONG,
            "name has 2000",
        ),
    ],
)
def test_first_failing_rule_wins(
    overrides: dict[str, str], reason: Reason, detail_part: str
) -> None:
    result = split_valid(events_of([envelope(**overrides)]), envelope_rules("acme"), "acme")
    assert result.valid.is_empty()
    row = result.rejects.row(0, named=True)
    assert row["reason"] == reason
    assert detail_part in row["detail"]


def test_valid_rows_untouched_and_rejects_complete() -> None:
    payloads = [
        envelope(event_id="ok-1"),
        envelope(event_id="bad-1", tenant="globex"),
        envelope(event_id="ok-2", type_name="Column", qualified_name="default/sf/1/DB/SCH/T/C"),
        envelope(event_id="bad-2", type_name="column"),
        envelope(event_id="ok-3", name="x" * 1_024),
    ]
    events = events_of(payloads)
    result = split_valid(events, envelope_rules("acme"), "acme")
    assert_frame_equal(result.valid, events.filter(pl.col("event_id").str.starts_with("ok")))
    assert result.valid.schema == pl.Schema(EVENT_SCHEMA)
    assert result.rejects.schema == pl.Schema(REJECT_SCHEMA)
    rejects = result.rejects.sort("event_id")
    assert rejects.select("event_id", "reason", "tenant", "origin").rows() == [
        ("bad-1", Reason.TENANT_MISMATCH, "acme", "o1"),
        ("bad-2", Reason.BAD_TYPE_NAME, "acme", "o3"),
    ]
    # the raw payload travels to the quarantine untouched
    assert rejects["raw"].to_list() == [payloads[1], payloads[3]]
    assert rejects["quarantine_id"].n_unique() == 2
    assert rejects["quarantined_at"].null_count() == 0


def test_all_valid_frame_is_returned_whole() -> None:
    events = events_of([envelope(event_id=f"e{i}") for i in range(5)])
    result = split_valid(events, envelope_rules("acme"), "acme")
    assert_frame_equal(result.valid, events)
    assert result.rejects.is_empty()
    assert result.failures_by_rule == dict.fromkeys(RULE_NAMES, 0)


def test_failures_by_rule_counts_every_broken_rule() -> None:
    payloads = [
        envelope(),  # valid
        envelope(tenant="Acme"),  # tenant_format and tenant_binding
        envelope(tenant="globex"),  # tenant_binding
        envelope(type_name=""),  # type_name_not_empty and type_name_format
        envelope(type_name="column"),  # type_name_format
        envelope(name="", event_id=" "),  # name_not_empty, event_id_not_empty
        envelope(qualified_name="q" * 4_097),  # qualified_name_bounded, _structure
        envelope(qualified_name="q" * 4_097, name="n" * 1_025),  # both bounded, _structure
    ]
    result = split_valid(events_of(payloads), envelope_rules("acme"), "acme")
    assert result.failures_by_rule == {
        "tenant_format": 1,
        "tenant_binding": 2,
        "event_id_not_empty": 1,
        "type_name_not_empty": 1,
        "qualified_name_not_empty": 0,
        "name_not_empty": 1,
        "event_id_bounded": 0,
        "name_bounded": 1,
        "qualified_name_bounded": 2,
        "type_name_format": 2,
        "qualified_name_structure": 2,
        "parent_is_prefix": 0,
    }
    assert result.valid.height == 1
    assert result.rejects.height == len(payloads) - 1
    counts: dict[str, Any] = dict(result.rejects.group_by("reason").len().iter_rows())
    assert counts == {
        Reason.BAD_TENANT: 1,
        Reason.TENANT_MISMATCH: 1,
        Reason.EMPTY_FIELD: 2,
        Reason.BAD_TYPE_NAME: 1,
        Reason.FIELD_TOO_LONG: 2,
    }


def test_empty_frame() -> None:
    result = split_valid(empty_events(), envelope_rules("acme"), "acme")
    assert result.valid.is_empty()
    assert result.valid.schema == pl.Schema(EVENT_SCHEMA)
    assert result.rejects.is_empty()
    assert result.rejects.schema == pl.Schema(REJECT_SCHEMA)
    assert result.failures_by_rule == dict.fromkeys(RULE_NAMES, 0)
