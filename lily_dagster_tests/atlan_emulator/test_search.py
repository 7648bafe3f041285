"""The emulator's Elasticsearch-DSL interpreter on its own: clause semantics pyatlan relies on,
sorting with missing values last, and index narrowing agreeing with a full scan."""

from __future__ import annotations

from typing import Any

import pytest
from atlan_emulator.errors import AtlasError
from atlan_emulator.model import StoredEntity
from atlan_emulator.search import narrowing, run_search


def entity(n: int, type_name: str = "Table", **attributes: Any) -> StoredEntity:
    return StoredEntity(
        guid=f"g{n:02}",
        type_name=type_name,
        qualified_name=f"c/db/s/t{n}",
        status="DELETED" if n == 4 else "ACTIVE",
        create_time=1000 + n // 2,
        update_time=2000 + n,
        version=1,
        attributes={"qualifiedName": f"c/db/s/t{n}", "name": f"T{n}", **attributes},
        classifications=[{"typeName": "tagA"}] if n % 3 == 0 else [],
        business_attributes={},
        labels=[],
    )


ENTITIES = [
    entity(0, description="Orders table", owners=["ann", "bob"], order=3),
    entity(1, description="customers"),
    entity(2, "Column", order=1),
    entity(3, "View", owners=["bob"], order="7"),
    entity(4, description="old orders"),
]


def names(query: dict[str, Any], **dsl: Any) -> list[str]:
    _, page = run_search(ENTITIES, {"query": query, "size": 100, **dsl})
    return [e.attributes["name"] for e in page]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"term": {"__typeName.keyword": "Column"}}, ["T2"]),
        ({"term": {"__superTypeNames.keyword": {"value": "SQL"}}}, ["T0", "T1", "T2", "T3", "T4"]),
        ({"terms": {"__state": ["DELETED"]}}, ["T4"]),
        ({"term": {"name.keyword": {"value": "t1", "case_insensitive": True}}}, ["T1"]),
        ({"term": {"owners": "bob"}}, ["T0", "T3"]),  # an array matches on any value
        ({"term": {"order": 7}}, ["T3"]),  # "7" stored, 7 asked: numbers coerce
        ({"terms": {"__traitNames": ["tagA"]}}, ["T0", "T3"]),
        ({"prefix": {"qualifiedName": {"value": "C/DB/S/T1", "case_insensitive": True}}}, ["T1"]),
        ({"wildcard": {"description.keyword": {"value": "*orders"}}}, ["T4"]),
        ({"regexp": {"name.keyword": {"value": "T[23]"}}}, ["T2", "T3"]),
        ({"range": {"order": {"gt": 1, "lte": 7}}}, ["T0", "T3"]),
        ({"range": {"__timestamp": {"gte": 1001}}}, ["T2", "T3", "T4"]),
        ({"exists": {"field": "description"}}, ["T0", "T1", "T4"]),
        ({"match": {"description": "ORDERS"}}, ["T0", "T4"]),
        ({"match_phrase": {"description": "old orders"}}, ["T4"]),
        ({"match_all": {}}, ["T0", "T1", "T2", "T3", "T4"]),
        (
            {
                "bool": {
                    "filter": [{"term": {"__typeName.keyword": "Table"}}],
                    "must_not": [{"term": {"__state": "DELETED"}}],
                }
            },
            ["T0", "T1"],
        ),
        # should alone: at least one has to match; beside a filter, optional unless asked.
        ({"bool": {"should": [{"term": {"order": 1}}, {"term": {"order": 3}}]}}, ["T0", "T2"]),
        (
            {"bool": {"filter": {"exists": {"field": "order"}}, "should": {"term": {"order": 1}}}},
            ["T0", "T2", "T3"],
        ),
        (
            {
                "bool": {
                    "filter": {"exists": {"field": "order"}},
                    "should": [{"term": {"order": 1}}, {"term": {"owners": "bob"}}],
                    "minimum_should_match": 1,
                }
            },
            ["T0", "T2", "T3"],
        ),
    ],
)
def test_clauses_match_as_elasticsearch_does(query: dict[str, Any], expected: list[str]) -> None:
    assert names(query) == expected


def test_sort_puts_missing_values_last_and_breaks_ties_by_guid() -> None:
    # Keywords sort by code point: "old orders" > "customers" > "Orders table".
    assert names({"match_all": {}}, sort=[{"description.keyword": {"order": "desc"}}]) == [
        "T4",
        "T1",
        "T0",
        "T2",
        "T3",
    ]
    assert names({"match_all": {}}, sort=[{"__timestamp": {"order": "desc"}}]) == [
        "T4",
        "T2",
        "T3",
        "T0",
        "T1",
    ]


def test_paging_and_the_result_window() -> None:
    count, page = run_search(ENTITIES, {"query": {"match_all": {}}, "from": 3, "size": 10})
    assert count == 5 and [e.guid for e in page] == ["g03", "g04"]
    with pytest.raises(AtlasError, match="Result window is too large"):
        run_search(ENTITIES, {"query": {"match_all": {}}, "from": 9_950, "size": 100})
    with pytest.raises(AtlasError, match="unsupported query \\[fuzzy\\]"):
        run_search(ENTITIES, {"query": {"fuzzy": {"name": "T1"}}})


def test_narrowing_finds_only_required_exact_matches() -> None:
    lookup = {"bool": {"filter": [{"terms": {"qualifiedName": ["c/db/s/t1", "x"]}}]}}
    assert narrowing({"query": lookup}) == ("qualifiedName", frozenset({"c/db/s/t1", "x"}))
    assert narrowing({"query": {"term": {"__guid": {"value": "g01"}}}}) == (
        "guid",
        frozenset({"g01"}),
    )
    optional = {"bool": {"should": [{"term": {"qualifiedName": "c/db/s/t1"}}]}}
    folded = {"term": {"qualifiedName": {"value": "C/DB/S/T1", "case_insensitive": True}}}
    assert narrowing({"query": optional}) is None
    assert narrowing({"query": folded}) is None
