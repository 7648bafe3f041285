"""The dbt target on a real dbt project (fixtures/dbt_project), copied per test: exact diffs
of the property files, everything else byte-for-byte as it was."""

from __future__ import annotations

import difflib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from lily_dagster.lib.targets import (
    DeliveryContext,
    TargetRejectedError,
    TargetUnavailableError,
    get_target,
)
from lily_dagster.lib.targets.builtin.dbt import (
    DbtOptions,
    apply_dbt_plan,
    dbt_tag,
    jinja_safe,
    plan_dbt_updates,
    property_files,
)
from lily_dagster.settings import ConfigError, TargetConfig
from lily_dagster_tests.lib.targets.changes import change_frame

FIXTURE = Path(__file__).parents[2] / "fixtures" / "dbt_project"
STAGING = "default/snowflake/1700000000/ANALYTICS/STAGING"
MARTS = "default/snowflake/1700000000/ANALYTICS/MARTS"
OLD = 1_600_000_000  # mtime given to every copied file
CTX = DeliveryContext(tenant="acme", target="docs", idempotency_key="k1", timeout_s=5)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    target = tmp_path / "dbt_project"
    shutil.copytree(FIXTURE, target)
    for path in target.rglob("*"):
        os.utime(path, (OLD, OLD))
    return target


def snapshot(project: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(project)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(project.rglob("*"))
        if p.is_file()
    }


def diff(before: str, after: str) -> list[str]:
    """The changed lines, `-` removed and `+` added, in file order."""
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), n=0, lineterm="")
    return [line for line in lines if line[:1] in "+-" and line[:3] not in ("---", "+++")]


def configure(project: Path, **options: Any) -> Any:
    config = TargetConfig(name="docs", type="dbt", project_dir=str(project), **options)
    return get_target("dbt").configure(config)


def deliver(project: Path, rows: list[dict[str, Any]], **options: Any) -> None:
    get_target("dbt").deliver(change_frame(rows), configure(project, **options), CTX)


def load(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text())


def model(doc: Any, name: str) -> dict[str, Any]:
    return next(m for m in doc["models"] if m["name"] == name)


def column(entry: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in entry["columns"] if c["name"] == name)


MAIN_CHANGES: list[dict[str, Any]] = [
    {
        "qualified_name": f"{STAGING}/STG_ORDERS",
        "attributes": {
            "description": "Orders placed in the shop.",
            "owner_users": ["jdoe", "asmith"],
            "certificate_status": "VERIFIED",
        },
        "classifications": ["PII"],
    },
    {
        "qualified_name": f"{STAGING}/STG_ORDERS/EMAIL",
        "type_name": "Column",
        "attributes": {"description": "Customer e-mail address."},
        "classifications": ["PII", "PII:email", "GDPR:personal-data"],
    },
    {  # the same as the file says: no edit
        "qualified_name": f"{STAGING}/STG_ORDERS/AMOUNT",
        "type_name": "Column",
        "attributes": {"description": "Amount in the order's currency"},
    },
    {
        "qualified_name": f"{STAGING}/STG_CUSTOMERS",
        "attributes": {
            "description": "Customers, one row per person.",
            "owner_groups": ["crm-team"],
        },
    },
    {
        "qualified_name": f"{STAGING}/STG_CUSTOMERS/FULL_NAME",
        "type_name": "Column",
        "classifications": ["PII:person_name"],
    },
    {"qualified_name": f"{STAGING}/STG_PAYMENTS", "attributes": {"description": "x"}},
    {"qualified_name": f"{STAGING}/STG_ORDERS/COUPON", "type_name": "Column"},
    {"qualified_name": "default/snowflake/1700000000/ANALYTICS", "type_name": "Database"},
]

MAIN_DIFF = [
    '-    description: "Orders, one row per order."  # kept in sync with the warehouse',
    '+    description: "Orders placed in the shop."  # kept in sync with the warehouse',
    "-      owner: data-eng   # team that answers questions",
    "+      owner: jdoe, asmith   # team that answers questions",
    "-    tags: [\"staging\", 'orders']",
    "+      certificate: VERIFIED",
    "+      classifications: [PII]",
    "+    tags: [\"staging\", 'orders', pii]",
    "-        description: ''",
    "-        tags: [contact]",
    "+        description: 'Customer e-mail address.'",
    "+        config:",
    "+          meta:",
    "+            classifications: [PII, PII:email, GDPR:personal-data]",
    "+        tags: [contact, pii, pii_email, gdpr_personal-data]",
    "-      Customers, deduplicated",
    "-      by e-mail.",
    "+      Customers, one row per person.",
    "+        owner: crm-team",
    "+        config:",
    "+          meta:",
    "+            classifications: [PII:person_name]",
    "+          tags: [pii_person_name]",
]


def test_deliver_writes_exactly_the_hub_metadata(project: Path) -> None:
    staging = project / "models" / "staging" / "schema.yml"
    original = staging.read_text()
    untouched = {k: v for k, v in snapshot(project).items() if k != "models/staging/schema.yml"}

    deliver(project, MAIN_CHANGES)

    updated = staging.read_text()
    assert diff(original, updated) == MAIN_DIFF
    # Every comment line and every line not in the diff is still there, byte for byte.
    for line in original.splitlines():
        if line.lstrip().startswith("#"):
            assert line in updated.splitlines()
    after = snapshot(project)
    assert {k: v for k, v in after.items() if k != "models/staging/schema.yml"} == untouched
    assert after["models/staging/schema.yml"][1] != OLD * 1_000_000_000
    # What dbt will read.
    doc = load(staging)
    orders = model(doc, "stg_orders")
    assert orders["meta"] == {
        "owner": "jdoe, asmith",
        "sla_hours": 24,
        "certificate": "VERIFIED",
        "classifications": ["PII"],
    }
    assert column(orders, "email")["config"] == {
        "meta": {"classifications": ["PII", "PII:email", "GDPR:personal-data"]}
    }
    assert column(orders, "order_id")["data_tests"] == ["unique", "not_null"]
    customers = model(doc, "stg_customers")
    assert customers["description"] == "Customers, one row per person.\n"
    assert customers["config"]["meta"] == {"domain": "crm", "owner": "crm-team"}
    # No temporary file left behind.
    assert not [p for p in project.rglob("*") if p.name.startswith(".")]


def test_plan_reports_matches_without_writing(project: Path) -> None:
    before = snapshot(project)
    plan = plan_dbt_updates(project, change_frame(MAIN_CHANGES))
    assert snapshot(project) == before
    assert plan.matched == [
        f"{STAGING}/STG_ORDERS",
        f"{STAGING}/STG_ORDERS/EMAIL",
        f"{STAGING}/STG_ORDERS/AMOUNT",
        f"{STAGING}/STG_CUSTOMERS",
        f"{STAGING}/STG_CUSTOMERS/FULL_NAME",
    ]
    assert plan.unmatched == [f"{STAGING}/STG_PAYMENTS", f"{STAGING}/STG_ORDERS/COUPON"]
    assert plan.skipped == ["default/snowflake/1700000000/ANALYTICS"]
    assert [u.path.relative_to(project).as_posix() for u in plan.updates] == [
        "models/staging/schema.yml"
    ]
    edits = {(e.resource, e.column, e.key): (e.before, e.after) for e in plan.edits}
    assert edits[("stg_orders", None, "meta.owner")] == ("data-eng", "jdoe, asmith")
    assert edits[("stg_orders", None, "tags")] == (
        ["staging", "orders"],
        ["staging", "orders", "pii"],
    )
    assert edits[("stg_customers", "full_name", "config.tags")] == (None, ["pii_person_name"])
    assert ("stg_orders", "amount", "description") not in edits
    assert plan.summary() == {"matched": 5, "unmatched": 2, "skipped": 1, "edits": 12, "files": 1}


def test_second_delivery_changes_nothing(project: Path) -> None:
    deliver(project, MAIN_CHANGES)
    after_first = snapshot(project)
    plan = plan_dbt_updates(project, change_frame(MAIN_CHANGES))
    assert plan.updates == [] and plan.edits == []
    deliver(project, MAIN_CHANGES)
    assert snapshot(project) == after_first


def test_other_indentation_style_and_case_insensitive_names(project: Path) -> None:
    marts = project / "models" / "marts" / "schema.yml"
    original = marts.read_text()
    deliver(
        project,
        [
            {
                "qualified_name": f"{MARTS}/FCT_ORDERS",
                "attributes": {"description": "Order facts, one row per order."},
                "classifications": ["Finance"],
            },
            {
                "qualified_name": f"{MARTS}/FCT_ORDERS/AMOUNT_USD",
                "type_name": "Column",
                "attributes": {"certificate_status": "DRAFT"},
            },
        ],
    )
    assert diff(original, marts.read_text()) == [
        "-  description: Order facts.",
        "+  description: Order facts, one row per order.",
        "+  config:",
        "+    meta:",
        "+      classifications: [Finance]",
        "+    tags: [finance]",
        "+    config:",
        "+      meta:",
        "+        certificate: DRAFT",
    ]
    # The block sequence style (`- name` at the key's indentation) is kept.
    assert "- name: fct_orders\n  description: Order facts, one row per order.\n" in (
        marts.read_text()
    )


def test_removed_classifications_drop_lilys_tags_and_keep_the_authors(project: Path) -> None:
    staging = project / "models" / "staging" / "schema.yml"
    original = staging.read_text()
    records = [
        (f"{STAGING}/STG_ORDERS/EMAIL", "Column"),  # has tags of its own
        (f"{STAGING}/STG_ORDERS/AMOUNT", "Column"),  # followed by a blank line
        (f"{STAGING}/STG_CUSTOMERS", "Table"),  # has a config of its own
        (f"{STAGING}/STG_CUSTOMERS/FULL_NAME", "Column"),  # last in the file, with a comment
    ]
    deliver(
        project,
        [{"qualified_name": q, "type_name": t, "classifications": ["PII"]} for q, t in records],
    )
    doc = load(staging)
    assert column(model(doc, "stg_orders"), "email")["tags"] == ["contact", "pii"]
    assert column(model(doc, "stg_orders"), "amount")["config"]["tags"] == ["pii"]
    assert model(doc, "stg_customers")["config"]["tags"] == ["pii"]
    deliver(
        project,
        [
            {
                "qualified_name": q,
                "type_name": t,
                "classifications": [],
                "changed": ["classifications"],
                "before": {"classifications": ["PII"]},
            }
            for q, t in records
        ],
    )
    # Taking back what Lily wrote gives the file as it was, blank lines and comments included.
    assert staging.read_text() == original


def test_tags_false_writes_meta_only(project: Path) -> None:
    staging = project / "models" / "staging" / "schema.yml"
    deliver(
        project,
        [{"qualified_name": f"{STAGING}/STG_CUSTOMERS", "classifications": ["PII"]}],
        tags=False,
    )
    customers = model(load(staging), "stg_customers")
    assert customers["config"] == {
        "materialized": "view",
        "meta": {"domain": "crm", "classifications": ["PII"]},
    }


def test_meta_location_top_for_new_meta(project: Path) -> None:
    marts = project / "models" / "marts" / "schema.yml"
    deliver(
        project,
        [{"qualified_name": f"{MARTS}/FCT_ORDERS", "attributes": {"owner_users": ["jdoe"]}}],
        meta_location="top",
        tags=False,
    )
    assert model(load(marts), "fct_orders")["meta"] == {"owner": "jdoe"}


def test_archived_records_ignored_or_tagged(project: Path) -> None:
    marts = project / "models" / "marts" / "schema.yml"
    archived = {"qualified_name": f"{MARTS}/FCT_ORDERS", "change": "archived"}
    before = snapshot(project)
    deliver(project, [archived])
    assert snapshot(project) == before
    plan = plan_dbt_updates(project, change_frame([archived]))
    assert plan.skipped == [f"{MARTS}/FCT_ORDERS"] and plan.updates == []

    deliver(project, [archived], on_archive="tag")
    assert model(load(marts), "fct_orders")["config"] == {"meta": {"lily_status": "archived"}}
    # Restored: the marker goes.
    restored = {"qualified_name": f"{MARTS}/FCT_ORDERS", "change": "restored"}
    deliver(project, [restored], on_archive="tag")
    assert marts.read_bytes() == before["models/marts/schema.yml"][0]


def test_match_on_meta_qualified_name(project: Path) -> None:
    marts = project / "models" / "marts" / "schema.yml"
    marts.write_text(
        marts.read_text().replace(
            "- name: fct_orders\n",
            "- name: fct_orders\n  config:\n    meta:\n"
            f"      lily_qualified_name: {MARTS}/ORDERS_V2\n",
        )
    )
    rows = [
        {"qualified_name": f"{MARTS}/ORDERS_V2", "attributes": {"description": "Version two."}},
        {"qualified_name": f"{MARTS}/FCT_ORDERS", "attributes": {"description": "By name."}},
    ]
    plan = plan_dbt_updates(project, change_frame(rows), DbtOptions(match="meta"))
    assert plan.matched == [f"{MARTS}/ORDERS_V2"]
    assert plan.unmatched == [f"{MARTS}/FCT_ORDERS"]
    apply_dbt_plan(plan)
    assert model(load(marts), "fct_orders")["description"] == "Version two."


def test_scope_limits_the_records(project: Path) -> None:
    plan = plan_dbt_updates(project, change_frame(MAIN_CHANGES[:2]), DbtOptions(scope=(MARTS,)))
    assert plan.matched == [] and plan.skipped == [
        f"{STAGING}/STG_ORDERS",
        f"{STAGING}/STG_ORDERS/EMAIL",
    ]


def test_hostile_values_stay_valid_yaml_and_jinja(project: Path) -> None:
    staging = project / "models" / "staging" / "schema.yml"
    text = "Ünïcödé: it's \"quoted\" \\ back\nsecond line {{ run_query('drop') }} {% raw %} #x"
    deliver(
        project,
        [
            {
                "qualified_name": f"{STAGING}/STG_ORDERS/AMOUNT",
                "type_name": "Column",
                "attributes": {"description": text, "owner_users": ["o'brien: {{x}}"]},
                "classifications": ["PII: e-mail / {{x}}"],
            }
        ],
    )
    amount = column(model(load(staging), "stg_orders"), "amount")
    assert amount["description"] == jinja_safe(text)
    assert "{{ '{{' }} run_query" in amount["description"]
    assert amount["config"]["meta"]["owner"] == "o'brien: {{ '{{' }}x}}"
    assert amount["config"]["tags"] == ["pii_e-mail_x"]
    assert dbt_tag("GDPR:personal-data") == "gdpr_personal-data"
    assert dbt_tag(" :: ") is None


def test_invalid_yaml_is_rejected_naming_the_file(project: Path) -> None:
    broken = project / "models" / "marts" / "broken.yml"
    broken.write_text("version: 2\nmodels: [\n")
    before = snapshot(project)
    with pytest.raises(TargetRejectedError, match=r"broken\.yml: not valid YAML"):
        deliver(project, MAIN_CHANGES)
    assert snapshot(project) == before
    duplicate = project / "models" / "marts" / "broken.yml"
    duplicate.write_text("version: 2\nversion: 2\n")
    with pytest.raises(TargetRejectedError, match=r"broken\.yml"):
        plan_dbt_updates(project, change_frame(MAIN_CHANGES))


def test_file_changed_meanwhile_is_not_overwritten(project: Path) -> None:
    staging = project / "models" / "staging" / "schema.yml"
    plan = plan_dbt_updates(project, change_frame(MAIN_CHANGES))
    staging.write_text(staging.read_text() + "# edited by a person\n")
    edited = staging.read_text()
    with pytest.raises(TargetUnavailableError, match="changed while"):
        apply_dbt_plan(plan)
    assert staging.read_text() == edited


def test_crlf_files_keep_their_line_ends(project: Path) -> None:
    marts = project / "models" / "marts" / "schema.yml"
    marts.write_bytes(marts.read_bytes().replace(b"\n", b"\r\n"))
    deliver(
        project, [{"qualified_name": f"{MARTS}/FCT_ORDERS", "attributes": {"description": "D"}}]
    )
    data = marts.read_bytes()
    assert b"description: D\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")


def test_property_files_follow_dbt_project_paths(project: Path) -> None:
    assert [p.relative_to(project).as_posix() for p in property_files(project)] == [
        "models/marts/schema.yml",
        "models/staging/schema.yml",
        "models/staging/sources.yml",
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"project_dir": None}, "project_dir"),
        ({"project_dir": "relative/path"}, "absolute"),
        ({"project_dir": "/nonexistent/lily"}, "no dbt_project.yml"),
        ({"match": "alias"}, "match must be one of"),
        ({"on_archive": "delete"}, "on_archive"),
        ({"tags": "maybe"}, "tags must be true or false"),
        ({"colour": "blue"}, "unknown settings"),
    ],
)
def test_configure_errors(project: Path, options: dict[str, Any], message: str) -> None:
    merged = {"project_dir": str(project), **options}
    config = TargetConfig(
        name="docs", type="dbt", **{k: v for k, v in merged.items() if v is not None}
    )
    with pytest.raises(ConfigError, match=message) as caught:
        get_target("dbt").configure(config)
    assert "\n" not in str(caught.value)
