"""The change log every hub upsert writes: one entry per real change, numbered, with the
record's version, what changed and its value before, in the contract's change shape."""

from __future__ import annotations

import json
from pathlib import Path

from lily_dagster.lib.hub.local import LocalHub
from lily_dagster_tests.builders import ev, frame

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
