"""No combination of caller groups, policies and records ever shows a record the rules
hide: the compiled policies (one polars expression inside each read) agree with a plain
reference evaluator written from CONTRACT.md §6, through every read that returns records."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lily_dagster.lib.access import queries
from lily_dagster.lib.access.policy import AccessPolicy, Visibility
from lily_dagster_tests.lib.access.records import record, snapshot

SEGMENTS = ["SALES", "FINANCE", "HR", "A", "B"]
TYPES = ["Table", "Column", "View", "Process"]
TAGS = ["PII", "GDPR:email", "PUBLIC", "CONFIDENTIAL"]
GROUPS = ["contractors", "analysts", "stewards"]
# Regular expressions as an operator writes them: prefixes, segments, alternatives, anchors.
PATTERNS = ["/FINANCE/", "^default/db/SALES", "HR$", "/(A|B)/", "[AB]$", "FIN", ".*"]


def reference_visible(
    rec: dict[str, Any], policies: list[dict[str, Any]], groups: set[str]
) -> bool:
    def applies(p: dict[str, Any]) -> bool:
        return p.get("groups") is None or bool(set(p["groups"]) & groups)

    def matches(p: dict[str, Any]) -> bool:
        if p.get("qualified_name") is not None and not re.search(
            p["qualified_name"], rec["qualified_name"]
        ):
            return False
        if p.get("type_names") is not None and rec["type_name"] not in p["type_names"]:
            return False
        tags = set(rec["classifications"] or [])
        return p.get("classifications") is None or bool(tags & set(p["classifications"]))

    mine = [p for p in policies if applies(p)]
    if any(matches(p) for p in mine if p["effect"] == "deny"):
        return False
    allows = [p for p in mine if p["effect"] == "allow"]
    return not allows or any(matches(p) for p in allows)


def _maybe(values: list[str]) -> st.SearchStrategy[list[str] | None]:
    return st.none() | st.lists(st.sampled_from(values), min_size=1, max_size=3, unique=True)


policies_st = st.lists(
    st.fixed_dictionaries(
        {
            "effect": st.sampled_from(["deny", "allow"]),
            "groups": _maybe(GROUPS),
            "qualified_name": st.none() | st.sampled_from(PATTERNS),
            "type_names": _maybe(TYPES),
            "classifications": _maybe(TAGS),
        }
    ),
    max_size=4,
)
records_st = st.lists(
    st.builds(
        lambda path, type_name, tags: record(
            "default/db/" + "/".join(path), type_name=type_name, classifications=tags
        ),
        st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3),
        st.sampled_from(TYPES),
        st.lists(st.sampled_from(TAGS), max_size=2, unique=True),
    ),
    max_size=25,
    unique_by=lambda r: r["qualified_name"],
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=records_st,
    raw_policies=policies_st,
    groups=st.sets(st.sampled_from(GROUPS)),
    limit=st.integers(1, 7),
)
def test_no_read_returns_a_record_the_rules_hide(
    records: list[dict[str, Any]],
    raw_policies: list[dict[str, Any]],
    groups: set[str],
    limit: int,
) -> None:
    policies = [
        AccessPolicy.model_validate(
            {"name": f"p{i}", **{k: v for k, v in p.items() if v is not None}}
        )
        for i, p in enumerate(raw_policies)
    ]
    expected = sorted(
        r["qualified_name"] for r in records if reference_visible(r, raw_policies, groups)
    )
    snap = snapshot(records)
    view = Visibility(policies, groups)

    # The expression (scans) and the per-record test (point lookups) both agree with it.
    assert sorted(view.filter(snap.records)["qualified_name"].to_list()) == expected
    per_record = [r["qualified_name"] for r in records if queries.shows(view, r)]
    assert sorted(per_record) == expected

    listed: list[str] = []
    after = None
    while True:  # every page, as a client follows the cursor
        page, more = queries.list_assets(snap, queries.AssetFilter(), view, after, limit)
        listed += page["qualified_name"].to_list()
        if not more:
            break
        after = listed[-1]
    assert listed == expected

    for r in records:
        got = queries.get_asset(snap, r["qualified_name"], view)
        assert (got is not None) == (r["qualified_name"] in expected)

    # A Process's inputs and outputs: records as above, names of no record by name alone.
    unknown = ["default/db/FINANCE/GONE", "default/db/SALES/GONE", "elsewhere/HR"]
    bare = [{"qualified_name": n, "type_name": None, "classifications": []} for n in unknown]
    unknown = [n for n in unknown if n not in {r["qualified_name"] for r in records}]
    referenced = [r["qualified_name"] for r in records] + unknown
    expected_refs = set(expected) | {
        b["qualified_name"]
        for b in bare
        if b["qualified_name"] in unknown and reference_visible(b, raw_policies, groups)
    }
    assert queries.visible_names(snap, referenced, view) == expected_refs


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=records_st,
    links=st.lists(st.tuples(st.integers(0, 24), st.integers(0, 24)), max_size=20),
    raw_policies=policies_st,
    groups=st.sets(st.sampled_from(GROUPS)),
    depth=st.integers(1, 4),
    upstream=st.booleans(),
)
def test_lineage_neither_shows_nor_crosses_a_hidden_record(
    records: list[dict[str, Any]],
    links: list[tuple[int, int]],
    raw_policies: list[dict[str, Any]],
    groups: set[str],
    depth: int,
    upstream: bool,
) -> None:
    if not records:
        return
    names = [r["qualified_name"] for r in records]
    processes = [
        record(
            f"default/proc/{i}",
            type_name="Process",
            inputs=[names[a % len(names)]],
            outputs=[names[b % len(names)]],
        )
        for i, (a, b) in enumerate(links)
    ]
    everything = records + processes
    policies = [
        AccessPolicy.model_validate(
            {"name": f"p{i}", **{k: v for k, v in p.items() if v is not None}}
        )
        for i, p in enumerate(raw_policies)
    ]
    shown = {r["qualified_name"] for r in everything if reference_visible(r, raw_policies, groups)}
    snap = snapshot(everything)
    view = Visibility(policies, groups)
    direction: queries.Direction = "upstream" if upstream else "downstream"
    found = queries.lineage(snap, names[0], direction, depth, view)
    if names[0] not in shown:
        assert found is None
        return
    assert found is not None
    nodes, edges = found
    node_names = {n["qualified_name"] for n in nodes}
    assert node_names <= shown
    for edge in edges:
        assert {edge["process"], edge["from"], edge["to"]} <= shown
    # Reference walk over the visible graph only.
    near, far = ("outputs", "inputs") if upstream else ("inputs", "outputs")
    reached, frontier = {names[0]}, {names[0]}
    for _ in range(depth):
        step = set()
        for p in processes:
            if p["qualified_name"] in shown and p[near][0] in frontier and p[far][0] in shown:
                step |= {p["qualified_name"], p[far][0]}
        frontier = {n for n in step if not n.startswith("default/proc/")} - reached
        reached |= step
    assert node_names == reached
