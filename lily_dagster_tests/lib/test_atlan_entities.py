"""The bulk path's entity JSON against what pyatlan's own creators produce for the same
assets: same type names, qualified-name conventions, derived attributes and references."""

from __future__ import annotations

import json
from typing import Any

import polars as pl
import pytest

from lily_dagster.lib.hub.atlan.entities import bulk_bodies, entity_json
from lily_dagster.lib.hub.base import RECORD_SCHEMA

CONN = "default/snowflake/1700000000"
SCH = f"{CONN}/DB/SCH"
ORDERS = f"{SCH}/ORDERS"


def records(rows: list[dict[str, Any]]) -> pl.DataFrame:
    frame = pl.DataFrame(rows)
    missing = [
        pl.lit(None, dtype=t).alias(c) for c, t in RECORD_SCHEMA.items() if c not in frame.columns
    ]
    return frame.with_columns(missing).select(list(RECORD_SCHEMA)).cast(RECORD_SCHEMA)  # type: ignore[arg-type]


def built(
    rows: list[dict[str, Any]],
    types: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    frame = records([{"status": "ACTIVE", "attributes": "{}", **r} for r in rows])
    type_frame = pl.DataFrame(
        {"qualified_name": list(types or {}), "type_name": list((types or {}).values())},
        schema={"qualified_name": pl.String, "type_name": pl.String},
    )
    guids = pl.Series([f"-{i + 1}" for i in range(frame.height)])
    out = entity_json(frame, guids, type_frame, tags or {})
    return [json.loads(e) for e in out.get_column("entity")]


def pyatlan_json(asset: Any) -> dict[str, Any]:
    from pyatlan.client.atlan import AtlanClient
    from pyatlan.model.core import AtlanRequest, BulkRequest

    client = AtlanClient(base_url="http://127.0.0.1:9", api_key="unused")
    body = json.loads(AtlanRequest(instance=BulkRequest(entities=[asset]), client=client).json())
    entity: dict[str, Any] = body["entities"][0]
    return entity


def same_as_pyatlan(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    assert ours["typeName"] == theirs["typeName"]
    for key, value in theirs["attributes"].items():
        mine = ours["attributes"].get(key)
        if isinstance(value, dict):  # a reference: pyatlan adds an empty "attributes"
            value = {k: v for k, v in value.items() if k != "attributes"}
        if isinstance(value, list):
            value = [{k: v for k, v in i.items() if k != "attributes"} for i in value]
        assert mine == value, key


def test_table_like_pyatlans_table_creator() -> None:
    from pyatlan.model.assets import Table

    theirs = pyatlan_json(Table.creator(name="ORDERS", schema_qualified_name=SCH))
    (ours,) = built(
        [
            {
                "qualified_name": ORDERS,
                "type_name": "Table",
                "name": "ORDERS",
                "parent_qualified_name": SCH,
            }
        ]
    )
    same_as_pyatlan(ours, theirs)


@pytest.mark.parametrize("parent_type", ["Table", "View"])
def test_column_like_pyatlans_column_creator(parent_type: str) -> None:
    from pyatlan.model import assets

    parent_class = getattr(assets, parent_type)
    theirs = pyatlan_json(
        assets.Column.creator(
            name="EMAIL", parent_qualified_name=ORDERS, parent_type=parent_class, order=3
        )
    )
    (ours,) = built(
        [
            {
                "qualified_name": f"{ORDERS}/EMAIL",
                "type_name": "Column",
                "name": "EMAIL",
                "parent_qualified_name": ORDERS,
                "attributes": '{"order":3}',
            }
        ],
        types={ORDERS: parent_type},
    )
    same_as_pyatlan(ours, theirs)


def test_process_like_pyatlans_process_creator() -> None:
    from pyatlan.model.assets import Process, Table

    inputs, outputs = [f"{SCH}/A"], [f"{SCH}/B"]
    theirs = pyatlan_json(
        Process.creator(
            name="load",
            connection_qualified_name=CONN,
            process_id="load",
            inputs=[Table.ref_by_qualified_name(q) for q in inputs],
            outputs=[Table.ref_by_qualified_name(q) for q in outputs],
        )
    )
    (ours,) = built(
        [
            {
                "qualified_name": f"{CONN}/load",
                "type_name": "Process",
                "name": "load",
                "inputs": inputs,
                "outputs": outputs,
            }
        ],
        types={q: "Table" for q in inputs + outputs},
    )
    same_as_pyatlan(ours, theirs)


def test_content_escaped_extras_renamed_tags_mapped_nulls_clear() -> None:
    (entity,) = built(
        [
            {
                "qualified_name": ORDERS,
                "type_name": "Table",
                "name": 'OR"DERS',
                "description": 'say "hi"\n\\ bye',
                "owner_users": ["jdoe"],
                "attributes": '{"row_count":5,"custom":{"a":1}}',
                "classifications": ["PII", "NotATag"],
            }
        ],
        tags={"PII": "hashedPII"},
    )
    attrs = entity["attributes"]
    assert attrs["name"] == 'OR"DERS' and attrs["description"] == 'say "hi"\n\\ bye'
    assert attrs["rowCount"] == 5 and attrs["custom"] == {"a": 1}
    # Well-known attributes are always sent: null clears what the source removed.
    assert attrs["certificateStatus"] is None and attrs["ownerGroups"] is None
    assert "atlanSchema" not in attrs  # no parent given: no reference
    assert entity["classifications"] == [{"typeName": "hashedPII"}]
    assert entity["status"] == "ACTIVE" and entity["guid"] == "-1"


def test_siblings_share_derived_attributes_but_keep_their_own_names() -> None:
    rows = [
        {
            "qualified_name": f"{ORDERS}/C{i}",
            "type_name": "Column",
            "name": f"C{i}",
            "parent_qualified_name": ORDERS,
        }
        for i in range(5)
    ]
    entities = built(rows, types={ORDERS: "Table"})
    assert [e["attributes"]["qualifiedName"] for e in entities] == [
        r["qualified_name"] for r in rows
    ]
    assert {e["attributes"]["tableQualifiedName"] for e in entities} == {ORDERS}


def test_bulk_bodies_chunk_entities() -> None:
    bodies = bulk_bodies(['{"a":1}'] * 5, 2)
    assert [len(json.loads(b)["entities"]) for b in bodies] == [2, 2, 1]
