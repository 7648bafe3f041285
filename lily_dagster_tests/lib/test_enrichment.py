"""normalise_owners: owner users and groups as Atlan spells them."""

from __future__ import annotations

import json
from typing import Any

import polars as pl
from polars.testing import assert_frame_equal

from lily_dagster.lib.enrichment import normalise_owners
from lily_dagster.lib.envelope import EVENT_SCHEMA, decode_envelopes, empty_events
from lily_dagster_tests.support import envelopes


def envelope(event_id: str, attributes: dict[str, Any] | None) -> str:
    """A Table envelope as text; None leaves `attributes` out."""
    env = envelopes.envelope(
        f"q/{event_id}", event_id=event_id, source="dbt", name="t", attributes=attributes
    )
    return json.dumps(env)


def events_of(payloads: list[str]) -> pl.DataFrame:
    result = decode_envelopes(
        payloads, [str(i) for i in range(len(payloads))], tenant="acme", max_event_bytes=1 << 20
    )
    assert result.rejects.is_empty()
    return result.events


def test_trim_lower_dedupe_sort() -> None:
    events = events_of(
        [
            envelope(
                "e1",
                {
                    "owner_users": [" JDoe", "jdoe", "Alice ", "bob", "ALICE", "\tcarol\n"],
                    "owner_groups": ["Data-Eng", " data-eng ", "Analysts"],
                },
            )
        ]
    )
    row = normalise_owners(events).row(0, named=True)
    assert row["owner_users"] == ["alice", "bob", "carol", "jdoe"]
    assert row["owner_groups"] == ["analysts", "data-eng"]


def test_empty_strings_dropped() -> None:
    events = events_of([envelope("e1", {"owner_users": ["", "b", "", "a"], "owner_groups": [""]})])
    row = normalise_owners(events).row(0, named=True)
    assert row["owner_users"] == ["a", "b"]
    assert row["owner_groups"] == []


def test_whitespace_only_strings_dropped() -> None:
    # " " is no user once trimmed; it must not reach the hub as an owner named ""
    events = events_of(
        [envelope("e1", {"owner_users": ["jdoe", "   ", "\t"], "owner_groups": [" "]})]
    )
    row = normalise_owners(events).row(0, named=True)
    assert row["owner_users"] == ["jdoe"]
    assert row["owner_groups"] == []


def test_null_kept_apart_from_empty_list() -> None:
    events = events_of(
        [
            envelope("absent", {"description": "no owners given"}),
            envelope("no-attributes", None),
            envelope("explicit-none", {"owner_users": [], "owner_groups": []}),
            envelope("only-empty", {"owner_users": [""], "owner_groups": ["", ""]}),
        ]
    )
    out = normalise_owners(events)
    assert out.select("event_id", "owner_users", "owner_groups").rows() == [
        ("absent", None, None),
        ("no-attributes", None, None),
        ("explicit-none", [], []),
        ("only-empty", [], []),
    ]


def test_rows_and_other_columns_are_untouched() -> None:
    events = events_of(
        [
            envelope("e1", {"owner_users": ["B", "a"], "description": " Keep Me ", "x": 1}),
            envelope("e2", {"owner_groups": ["G"]}),
        ]
    )
    out = normalise_owners(events)
    assert out.schema == pl.Schema(EVENT_SCHEMA)
    assert_frame_equal(
        out.drop("owner_users", "owner_groups"), events.drop("owner_users", "owner_groups")
    )
    assert out["owner_users"].to_list() == [["a", "b"], None]
    assert out["owner_groups"].to_list() == [None, ["g"]]


def test_idempotent() -> None:
    events = events_of([envelope("e1", {"owner_users": [" Z", "y", "Y"], "owner_groups": []})])
    once = normalise_owners(events)
    assert_frame_equal(normalise_owners(once), once)


def test_empty_frame() -> None:
    out = normalise_owners(empty_events())
    assert out.is_empty()
    assert out.schema == pl.Schema(EVENT_SCHEMA)
