"""The change log every hub upsert writes: one entry per real change, numbered, with the
record's version, what changed and its value before, in the contract's change shape."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from lily_dagster.lib.hub.local import LocalHub
from lily_dagster_tests.support.envelopes import ev
from lily_dagster_tests.support.frames import frame

QN = "default/snowflake/1700000000/DB/SCH/ORDERS"


def test_every_change_is_logged_once_in_order_with_before_and_version(tmp_path: Path) -> None:
    hub = LocalHub(tmp_path)
    hub.upsert("acme", frame([ev("a", QN, 0, attributes={"description": "x"})]))
    hub.upsert("acme", frame([ev("a", QN, 0, attributes={"description": "x"})]))  # a replay
    hub.upsert("acme", frame([ev("b", QN, 5, attributes={"description": "y"})]))
    hub.upsert("acme", frame([ev("c", QN, 9, "delete")]))
    hub.upsert("acme", frame([ev("d", QN, 20, attributes={"description": "z"})]))
    log = hub.changes("acme", 0, 100)
    assert log["seq"].to_list() == [1, 2, 3, 4]
    assert log["change"].to_list() == ["created", "updated", "archived", "restored"]
    assert log["version"].to_list() == [1, 2, 3, 4]
    assert log["changed"].to_list()[1] == ["description"]
    assert json.loads(log["before"][1])["description"] == "x"
    assert log["before"][0] is None
    raw = json.loads(log["raw"][3])
    assert set(raw) == {
        "qualified_name", "type_name", "change", "version", "name", "attributes",
        "classifications",
    }  # fmt: skip
    assert raw["attributes"] == {"description": "z"} and raw["change"] == "restored"
    assert hub.last_change("acme") == 4
    assert hub.changes("acme", 2, 1)["seq"].to_list() == [3]


def test_a_record_born_deleted_is_logged_as_archived_not_created(tmp_path: Path) -> None:
    """Known only by its delete, or created and deleted in one batch: a target reading the
    log must not take it for live. It is still counted as a record created."""
    hub = LocalHub(tmp_path)
    result = hub.upsert(
        "acme",
        frame([ev("a", QN, 0), ev("b", QN, 5, "delete"), ev("g", QN + "_GONE", 3, "delete")]),
    )
    assert (result.created, result.archived) == (2, 0)
    log = hub.changes("acme", 0, 100).sort("qualified_name")
    assert log["change"].to_list() == ["archived", "archived"]
    assert log["version"].to_list() == [1, 1]
    assert json.loads(log["raw"][0])["change"] == "archived"
    hub.upsert("acme", frame([ev("c", QN, 9)]))
    assert hub.changes("acme", 2, 10)["change"].to_list() == ["restored"]


def test_a_partial_change_is_logged_as_an_update_of_the_fields_it_touches(tmp_path: Path) -> None:
    hub = LocalHub(tmp_path)
    hub.upsert("acme", frame([ev("a", QN, 0)]))
    patch = {"set": {"certificate_status": "VERIFIED"}, "add_classifications": ["PII"]}
    hub.upsert("acme", frame([ev("p", QN, 5, attributes={"lily_patch": patch})]))
    last = hub.changes("acme", 1, 10).to_dicts()
    assert [(c["change"], c["changed"]) for c in last] == [
        ("updated", ["certificate_status", "classifications"])
    ]
    assert last[0]["classifications"] == ["PII"]
    assert json.loads(last[0]["attributes"])["certificate_status"] == "VERIFIED"


def test_each_change_keeps_the_content_it_had_as_its_record_moves_on(tmp_path: Path) -> None:
    """A change written with its record's row is kept on that row; the row being replaced,
    or its version moving, moves the change into the change log first, content included."""
    hub = LocalHub(tmp_path)
    other = QN + "_2"
    owners = {"owner_users": ["ann"], "description": "first", "rows": 1}
    hub.upsert(
        "acme",
        frame(
            [
                ev("a", QN, 0, attributes=owners, classifications=["PII"]),
                ev("a2", other, 0, attributes={"description": "other first"}),
            ]
        ),
    )
    assert references(tmp_path) == [1, 2]  # both kept on their records' rows
    patch = {"set": {"certificate_status": "VERIFIED"}}
    hub.upsert("acme", frame([ev("p", QN, 5, attributes={"lily_patch": patch})]))
    assert references(tmp_path) == [2]  # the version moved: change 1 went to the log
    hub.upsert(
        "acme",
        frame(
            [
                ev("b", QN, 9, attributes={"description": "second"}),
                ev("b2", other, 9, attributes={"description": "other second"}),
            ]
        ),
    )
    log = {c["seq"]: c for c in hub.changes("acme", 0, 10).to_dicts()}
    assert [(c["qualified_name"], c["change"]) for c in log.values()] == [
        (QN, "created"), (other, "created"), (QN, "updated"), (QN, "updated"),
        (other, "updated"),
    ]  # fmt: skip
    assert json.loads(log[1]["attributes"]) == owners and log[1]["classifications"] == ["PII"]
    assert json.loads(log[2]["attributes"]) == {"description": "other first"}
    assert json.loads(log[3]["attributes"])["certificate_status"] == "VERIFIED"
    assert json.loads(log[3]["attributes"])["description"] == "first"
    assert json.loads(log[4]["attributes"]) == {"description": "second"}
    assert json.loads(log[5]["attributes"]) == {"description": "other second"}
    assert log[5]["classifications"] == []


def references(hub_dir: Path) -> list[int]:
    """The changes kept on their record's own row (not copied into the change log)."""
    with duckdb.connect(str(hub_dir / "acme.duckdb"), read_only=True) as con:
        found = con.sql(
            "SELECT change_seq FROM records WHERE change_seq IS NOT NULL ORDER BY 1"
        ).fetchall()
    return [int(seq) for (seq,) in found]


# The tables as the first releases made them: records keyed by a primary key, the change
# log holding the whole attributes object.
_FIRST_RELEASE_DDL = """
CREATE TABLE records (
    qualified_name VARCHAR PRIMARY KEY, type_name VARCHAR NOT NULL, name VARCHAR NOT NULL,
    status VARCHAR NOT NULL, description VARCHAR, owner_users VARCHAR[],
    owner_groups VARCHAR[], certificate_status VARCHAR, parent_qualified_name VARCHAR,
    glossary_terms VARCHAR[], attributes VARCHAR, classifications VARCHAR[],
    inputs VARCHAR[], outputs VARCHAR[], content_upsert BOOLEAN NOT NULL,
    content_time TIMESTAMPTZ NOT NULL, content_id VARCHAR NOT NULL,
    event_time TIMESTAMPTZ NOT NULL, event_id VARCHAR NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL, version BIGINT NOT NULL
);
CREATE TABLE changes (
    seq BIGINT NOT NULL, qualified_name VARCHAR NOT NULL, type_name VARCHAR NOT NULL,
    change VARCHAR NOT NULL, version BIGINT NOT NULL, name VARCHAR, status VARCHAR NOT NULL,
    attributes VARCHAR, classifications VARCHAR[], changed VARCHAR[], before VARCHAR,
    changed_at TIMESTAMPTZ NOT NULL
);
INSERT INTO changes VALUES (1, 'default/x/OLD', 'Table', 'created', 1, 'OLD', 'ACTIVE',
    '{"description":"kept","owner_users":["ann"],"rows":3}', [], [], NULL, now());
INSERT INTO records VALUES ('default/x/OLD', 'Table', 'OLD', 'ACTIVE', 'kept', ['ann'], [],
    NULL, NULL, [], '{"rows":3}', [], [], [], true, '2026-01-01T00:00:00Z', 'o',
    '2026-01-01T00:00:00Z', 'o', now(), 1);
"""


def test_a_hub_made_by_an_earlier_release_keeps_working(tmp_path: Path) -> None:
    """Its old change rows read back as they were written, and records under its primary
    key are still replaced, not duplicated, by later changes."""
    with duckdb.connect(str(tmp_path / "acme.duckdb")) as con:
        con.execute(_FIRST_RELEASE_DDL)
    hub = LocalHub(tmp_path)
    # Read before anything is written with this release: the old log as it is.
    assert hub.last_change("acme") == 1
    assert json.loads(hub.changes("acme", 0, 10)["attributes"][0])["rows"] == 3
    hub.upsert("acme", frame([ev("a", QN, 0, attributes={"description": "x"})]))
    hub.upsert("acme", frame([ev("b", QN, 5, attributes={"description": "y", "rows": 2})]))
    log = hub.changes("acme", 0, 10)
    assert log["seq"].to_list() == [1, 2, 3]
    assert json.loads(log["attributes"][0]) == {
        "description": "kept", "owner_users": ["ann"], "rows": 3,
    }  # fmt: skip
    assert json.loads(log["attributes"][2]) == {"rows": 2, "description": "y"}
    assert json.loads(log["raw"][2])["attributes"] == {"rows": 2, "description": "y"}
    # Its record, stored under the primary key, is found and replaced, not duplicated.
    hub.upsert("acme", frame([ev("c", "default/x/OLD", 5, attributes={"rows": 4})]))
    records = hub.records("acme").sort("qualified_name")
    assert records["qualified_name"].to_list() == [QN, "default/x/OLD"]
    assert records["version"].to_list() == [2, 2]
    assert json.loads(records["attributes"][1]) == {"rows": 4}
