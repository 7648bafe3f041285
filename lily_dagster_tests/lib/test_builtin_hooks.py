"""The built-in hooks, each through build_chain/run_chain as a configured chain runs them:
pii-classify, pii-mask, ownership-map, glossary-tags, lineage-check."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from lily_dagster.lib.envelope import decode_envelopes
from lily_dagster.lib.hooks import ChainResult, HookContext, build_chain, run_chain
from lily_dagster.lib.hub.local import LocalHub
from lily_dagster.settings import ConfigError, HookRef
from lily_dagster_tests.support import envelopes

CONN = "default/snowflake/1700000000"
TABLE = f"{CONN}/DB/SCH/ORDERS"


def envelope(
    name: str,
    *,
    type_name: str = "Column",
    qualified_name: str | None = None,
    op: str = "upsert",
    event_id: str | None = None,
    attributes: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """An asset named `name` (a column of ORDERS unless `qualified_name` says otherwise),
    attributes always given; `fields` as the shared builder's."""
    return envelopes.envelope(
        qualified_name or f"{TABLE}/{name}",
        name=name,
        type_name=type_name,
        op=op,
        event_id=event_id or f"evt-{type_name}-{name}-{op}",
        attributes=attributes or {},
        **fields,
    )


def frame(envelopes: list[dict[str, Any]]) -> pl.DataFrame:
    decoded = decode_envelopes(
        [json.dumps(e) for e in envelopes],
        [f"test/{i}" for i in range(len(envelopes))],
        tenant="acme",
        max_event_bytes=1 << 20,
    )
    assert decoded.rejects.is_empty(), decoded.rejects.get_column("detail").to_list()
    return decoded.events


def run(
    envelopes: list[dict[str, Any]],
    hook: str,
    settings: dict[str, Any] | None = None,
    hub_lookup: Any = None,
) -> ChainResult:
    chain = build_chain([HookRef(name=hook, settings=settings or {})], "pre_ingest")
    events = frame(envelopes)
    result = run_chain(events, chain, HookContext(tenant="acme", hub_lookup=hub_lookup))
    assert result.events.schema == events.schema
    return result


def column(result: ChainResult, name: str) -> list[Any]:
    return result.events.get_column(name).to_list()


def load_error(hook: str, settings: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        build_chain([HookRef(name=hook, settings=settings)], "pre_ingest")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"hook {hook!r}: "), message
    return message


# --- pii-classify -------------------------------------------------------------------------

BASE_TAGS = ["PII", "GDPR:personal-data"]


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("email", "email"),
        ("e_mail", "email"),
        ("EMAIL_ADDRESS", "email"),
        ("CUSTOMER_EMAIL", "email"),
        ("phone", "phone"),
        ("MOBILE_NUMBER", "phone"),
        ("ssn", "national_id"),
        ("PASSPORT_NUMBER", "national_id"),
        ("first_name", "person_name"),
        ("LASTNAME", "person_name"),
        ("billing_address", "address"),
        ("ZIP_CODE", "address"),
        ("ip_address", "ip_address"),
        ("CLIENT_IP", "ip_address"),
        ("card_number", "card_number"),
        ("dob", "birth_date"),
        ("DATE_OF_BIRTH", "birth_date"),
    ],
)
def test_pii_classify_by_column_name(name: str, kind: str) -> None:
    (tags,) = column(run([envelope(name)], "pii-classify"), "classifications")
    assert tags[:2] == BASE_TAGS
    assert f"PII:{kind}" in tags


@pytest.mark.parametrize(
    ("name", "kind"), [("EMAIL_ADDRESS", "email"), ("IP_ADDRESS", "ip_address")]
)
def test_pii_classify_compound_names_are_one_kind(name: str, kind: str) -> None:
    # An e-mail address is not a postal address.
    (tags,) = column(run([envelope(name)], "pii-classify"), "classifications")
    assert tags == [*BASE_TAGS, f"PII:{kind}"]


@pytest.mark.parametrize(
    "name",
    [
        "emailed_count",
        "EMAILS_SENT",
        "hotel",
        "company",
        "pipeline_id",
        "telemetry",
        "shipping_city",
        "tip_amount",
        "zip_file",
        "order_id",
        "updated_at",
        "description",
    ],
)
def test_pii_classify_names_match_on_underscore_word_boundaries_only(name: str) -> None:
    assert column(run([envelope(name)], "pii-classify"), "classifications") == [[]]


@pytest.mark.parametrize(
    ("samples", "kind"),
    [
        (["jdoe@acme.com", "a.b+c@example.co.uk"], "email"),
        (["10.1.2.3", "172.16.0.254"], "ip_address"),
        (["4111 1111 1111 1111", "5500-0000-0000-0004"], "card_number"),
        (["123-45-6789"], "national_id"),
        (["+44 20 7946 0958"], "phone"),
    ],
)
def test_pii_classify_by_sample_values(samples: list[str], kind: str) -> None:
    result = run([envelope("VALUE", attributes={"sample_values": samples})], "pii-classify")
    (tags,) = column(result, "classifications")
    assert tags[:2] == BASE_TAGS and f"PII:{kind}" in tags
    # The samples stay where they were.
    assert json.loads(column(result, "attributes")[0])["sample_values"] == samples


@pytest.mark.parametrize(
    ("samples", "kind_tags"),
    [
        (["192.168.10.20", "10.1.2.3"], ["PII:ip_address"]),
        (["4111 1111 1111 1111"], ["PII:card_number"]),
        (["2024-01-15", "2025-12-31"], []),  # dates are not personal data
    ],
    ids=["ipv4", "card", "iso-date"],
)
def test_pii_classify_samples_are_not_mistaken_for_phone_numbers(
    samples: list[str], kind_tags: list[str]
) -> None:
    result = run([envelope("VALUE", attributes={"sample_values": samples})], "pii-classify")
    (tags,) = column(result, "classifications")
    assert [t for t in tags if t.startswith("PII:")] == kind_tags


def test_pii_classify_judges_each_columns_samples_even_under_one_name() -> None:
    # Hooks judge once per distinct name and samples: columns sharing a name must not
    # share a verdict when their samples differ.
    result = run(
        [
            envelope("VALUE", attributes={"sample_values": ["jdoe@acme.com"]}, event_id="a"),
            envelope("VALUE", attributes={"sample_values": ["shipped"]}, event_id="b"),
            envelope("VALUE", attributes={"order": 3}, event_id="c"),
        ],
        "pii-classify",
    )
    assert column(result, "classifications") == [[*BASE_TAGS, "PII:email"], [], []]


def test_pii_classify_harmless_samples_stay_untagged() -> None:
    samples = {"sample_values": ["12.50", "7", "shipped", "N/A", "v1.2.3"]}
    result = run([envelope("VALUE", attributes=samples)], "pii-classify")
    assert column(result, "classifications") == [[]]


def test_pii_classify_only_columns_by_default_and_never_deletes() -> None:
    result = run(
        [
            envelope("EMAIL", type_name="Table", qualified_name=f"{CONN}/DB/SCH/EMAIL"),
            envelope("EMAIL", type_name="View", qualified_name=f"{CONN}/DB/SCH/V/EMAIL"),
            envelope("EMAIL", op="delete", classifications=["Finance"]),
            envelope("EMAIL", qualified_name=f"{TABLE}/X", event_id="col"),
        ],
        "pii-classify",
    )
    assert column(result, "classifications") == [
        [],
        [],
        ["Finance"],
        [*BASE_TAGS, "PII:email"],
    ]


def test_pii_classify_type_names_tags_kinds_configurable() -> None:
    events = [
        envelope("EMAIL", type_name="View", qualified_name=f"{CONN}/DB/SCH/V/EMAIL"),
        envelope("EMAIL"),
        envelope("PHONE"),
        envelope("EMAIL", type_name="Table", qualified_name=f"{CONN}/DB/SCH/EMAIL"),
    ]
    settings = {"type_names": ["View", "Column"], "tags": ["Sensitive"], "kinds": ["email"]}
    assert column(run(events, "pii-classify", settings), "classifications") == [
        ["Sensitive", "PII:email"],
        ["Sensitive", "PII:email"],
        [],
        [],
    ]
    plain = run(events, "pii-classify", {"tags": ["Sensitive"], "by_kind_tag": False})
    assert column(plain, "classifications") == [[], ["Sensitive"], ["Sensitive"], []]


def test_pii_classify_adds_no_duplicate_tags_and_keeps_the_existing_ones() -> None:
    result = run(
        [
            envelope("EMAIL", classifications=["Finance", "PII", "PII:email"]),
            envelope("HOME_EMAIL_ADDRESS", attributes={"sample_values": ["x@y.com"]}),
        ],
        "pii-classify",
    )
    first, second = column(result, "classifications")
    assert first == ["Finance", "PII", "PII:email", "GDPR:personal-data"]
    assert len(second) == len(set(second)) and second[:3] == [*BASE_TAGS, "PII:email"]


def test_pii_classify_unknown_kind_fails_at_load() -> None:
    assert "birthday" in load_error("pii-classify", {"kinds": ["birthday"]})


# --- pii-mask -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("owner: jdoe@acme.com, ask", "owner: [email], ask"),
        ("call +1 415 555 0100 today", "call [phone] today"),
        ("call 415-555-0100", "call [phone]"),
        ("London +44 20 7946 0958", "London [phone]"),
        ("paid with 4111 1111 1111 1111.", "paid with [card-number]."),
        ("card 5500-0000-0000-0004", "card [card-number]"),
        ("from 10.0.0.1 and 192.168.1.254", "from [ip-address] and [ip-address]"),
        ("ssn 123-45-6789", "ssn [national-id]"),
        (
            "a@b.io rang 415-555-0100 from 10.1.1.1",
            "[email] rang [phone] from [ip-address]",
        ),
        ("customer e-mail address", "customer e-mail address"),
        ("12 rows, 3.5% nulls, version 1.2.3", "12 rows, 3.5% nulls, version 1.2.3"),
    ],
)
def test_pii_mask_descriptions(text: str, masked: str) -> None:
    result = run([envelope("X", attributes={"description": text})], "pii-mask")
    assert column(result, "description") == [masked]


def test_pii_mask_us_phone_with_area_code_in_parentheses() -> None:
    result = run([envelope("X", attributes={"description": "call (415) 555-0100"})], "pii-mask")
    assert column(result, "description") == ["call [phone]"]


def test_pii_mask_leaves_dates_alone() -> None:
    text = "loaded daily since 2024-01-15"
    result = run([envelope("X", attributes={"description": text})], "pii-mask")
    assert column(result, "description") == [text]


def test_pii_mask_dashboard_names_only_and_nulls_kept() -> None:
    result = run(
        [
            envelope(
                "Churn for jdoe@acme.com",
                type_name="TableauDashboard",
                qualified_name="default/tableau/1/site/dash-1",
            ),
            envelope("Calls 415-555-0100", type_name="PowerBIReport", qualified_name="p/r/1"),
            envelope("jdoe@acme.com", type_name="Table", qualified_name=f"{CONN}/DB/SCH/T"),
            envelope("NO_DESCRIPTION"),
        ],
        "pii-mask",
    )
    assert column(result, "name") == [
        "Churn for [email]",
        "Calls [phone]",
        "jdoe@acme.com",
        "NO_DESCRIPTION",
    ]
    assert column(result, "description") == [None, None, None, None]


def test_pii_mask_kinds_and_name_types_configurable() -> None:
    events = [
        envelope(
            "Report for a@b.io",
            type_name="LookerLook",
            qualified_name="l/1",
            attributes={"description": "a@b.io, 415-555-0100"},
        ),
        envelope("Board a@b.io", type_name="TableauDashboard", qualified_name="t/1"),
    ]
    result = run(events, "pii-mask", {"kinds": ["email"], "name_types": "^Looker"})
    assert column(result, "description") == ["[email], 415-555-0100", None]
    assert column(result, "name") == ["Report for [email]", "Board a@b.io"]


def test_pii_mask_unknown_kind_fails_at_load() -> None:
    assert "'phone_number'" in load_error("pii-mask", {"kinds": ["phone_number"]})


# --- ownership-map ------------------------------------------------------------------------


def owned(users: list[str] | None, groups: list[str] | None, name: str = "T") -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    if users is not None:
        attributes["owner_users"] = users
    if groups is not None:
        attributes["owner_groups"] = groups
    return envelope(name, attributes=attributes)


MAPPED_EVENTS = [
    owned(["U123", "U999", "U456"], ["G1", "G-unknown"], "A"),
    owned(["U123", "U124"], [], "B"),
    owned(None, None, "C"),
]


def test_ownership_map_users_and_groups_keep_unmapped() -> None:
    settings = {"users": {"U123": "jdoe", "U124": "jdoe", "U456": "asmith"}, "groups": {"G1": "x"}}
    result = run(MAPPED_EVENTS, "ownership-map", settings)
    assert column(result, "owner_users") == [["jdoe", "U999", "asmith"], ["jdoe"], None]
    assert column(result, "owner_groups") == [["x", "G-unknown"], [], None]


def test_ownership_map_drop_unmapped() -> None:
    settings = {"users": {"U123": "jdoe", "U456": "asmith"}, "unmapped": "drop"}
    result = run(MAPPED_EVENTS, "ownership-map", settings)
    assert column(result, "owner_users") == [["jdoe", "asmith"], ["jdoe"], None]
    # No group table configured: groups untouched.
    assert column(result, "owner_groups") == [["G1", "G-unknown"], [], None]


def test_ownership_map_from_csv_file(tmp_path: Path) -> None:
    path = tmp_path / "owners.csv"
    path.write_text(
        "kind,source_id,atlan_name\nuser,U123,jdoe\nuser,U456,asmith\ngroup,G1,data-eng\n"
    )
    result = run(MAPPED_EVENTS, "ownership-map", {"file": str(path), "users": {"U999": "zed"}})
    assert column(result, "owner_users") == [["jdoe", "zed", "asmith"], ["jdoe", "U124"], None]
    assert column(result, "owner_groups") == [["data-eng", "G-unknown"], [], None]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("kind,source_id,atlan_name\nteam,T1,x\n", "kind must be user or group"),
        ("kind,source,atlan_name\nuser,U1,x\n", "missing column 'source_id'"),
        (None, "cannot read"),
    ],
    ids=["bad-kind", "bad-header", "no-file"],
)
def test_ownership_map_bad_csv_fails_at_load(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    path = tmp_path / "owners.csv"
    if content is not None:
        path.write_text(content)
    message = load_error("ownership-map", {"file": str(path)})
    assert expected in message and str(path) in message


# --- glossary-tags ------------------------------------------------------------------------

GLOSSARY = {
    "rules": [
        {
            "qualified_name": r"/SCH/ORDERS(/|$)",
            "add_classifications": ["Finance"],
            "add_terms": ["Order"],
        },
        {
            "qualified_name": r"/ORDERS/(EMAIL|PHONE)$",
            "type_names": ["Column"],
            "add_classifications": ["Contact", "Finance"],
            "add_terms": ["Customer contact"],
        },
        {"qualified_name": r"^default/snowflake/", "add_classifications": ["Snowflake"]},
    ]
}


def test_glossary_tags_rules_by_regex_and_type() -> None:
    result = run(
        [
            envelope("ORDERS", type_name="Table", qualified_name=TABLE),
            envelope("EMAIL"),
            envelope("EMAIL", type_name="Tag", qualified_name=f"{TABLE}/EMAIL"),
            envelope("X", type_name="Table", qualified_name="default/bigquery/1/P/D/X"),
        ],
        "glossary-tags",
        GLOSSARY,
    )
    assert column(result, "classifications") == [
        ["Finance", "Snowflake"],
        ["Finance", "Contact", "Snowflake"],
        ["Finance", "Snowflake"],  # not a Column: only the rules without type_names
        [],
    ]
    assert column(result, "glossary_terms") == [
        ["Order"],
        ["Order", "Customer contact"],
        ["Order"],
        None,
    ]


def test_glossary_tags_keep_what_the_event_has_and_null_apart_from_empty() -> None:
    result = run(
        [
            envelope(
                "EMAIL",
                classifications=["PII", "Finance"],
                attributes={"glossary_terms": ["Email", "Order"]},
            ),
            envelope("X", type_name="Table", qualified_name="other/x", event_id="null-terms"),
            envelope(
                "Y",
                type_name="Table",
                qualified_name="other/y",
                attributes={"glossary_terms": []},
            ),
            envelope("EMAIL", op="delete", classifications=[], event_id="deleted"),
        ],
        "glossary-tags",
        GLOSSARY,
    )
    assert column(result, "classifications") == [
        ["PII", "Finance", "Contact", "Snowflake"],
        [],
        [],
        [],
    ]
    assert column(result, "glossary_terms") == [
        ["Email", "Order", "Customer contact"],
        None,  # no terms given, none added: still "not given"
        [],  # explicitly none, none added: still explicitly none
        None,  # deletes are not tagged
    ]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {"rules": [{"qualified_name": "[abc", "add_terms": ["x"]}]},
            "rules.0.qualified_name: '[abc' is not a regex",
        ),
        ({"rules": [{"qualified_name": "x"}]}, "adds nothing"),
        ({"rules": [{"add_terms": ["x"]}]}, "rules.0.qualified_name is required"),
        ({"rules": "x"}, "rules: Input should be a valid list"),
        ({}, "rules is required"),
    ],
)
def test_glossary_tags_bad_rules_fail_at_load(settings: dict[str, Any], expected: str) -> None:
    assert expected in load_error("glossary-tags", settings)


# --- lineage-check ------------------------------------------------------------------------

RAW = f"{CONN}/DB/SCH/RAW_ORDERS"
STG = f"{CONN}/DB/SCH/STG_ORDERS"
MART = f"{CONN}/DB/SCH/ORDERS_MART"


def process(name: str, inputs: list[str] | None, outputs: list[str] | None) -> dict[str, Any]:
    return envelope(
        name,
        type_name="Process",
        qualified_name=f"default/dbt/1/{name}",
        inputs=inputs,
        outputs=outputs,
    )


def table(qualified_name: str, event_time: str = "2026-11-23T10:00:00Z") -> dict[str, Any]:
    return envelope(
        qualified_name.rsplit("/", 1)[-1],
        type_name="Table",
        qualified_name=qualified_name,
        event_id=f"tbl-{qualified_name.rsplit('/', 1)[-1]}-{event_time}",
        event_time=event_time,
        attributes={"description": "the real one"},
    )


def test_lineage_check_rejects_process_without_ends() -> None:
    result = run(
        [
            process("no_ends", [], []),
            process("absent_ends", None, None),
            process("ok", [RAW], [STG]),
            table(RAW),
            table(STG),
            envelope("gone", type_name="Process", qualified_name="default/dbt/1/gone", op="delete"),
        ],
        "lineage-check",
    )
    rejects = {
        json.loads(raw)["asset"]["name"]: (reason, detail)
        for raw, reason, detail in result.rejects.select("raw", "reason", "detail").iter_rows()
    }
    detail = "lineage-check: a Process needs inputs or outputs"
    assert rejects == {
        "no_ends": ("bad_lineage", detail),
        "absent_ends": ("bad_lineage", detail),
    }
    assert sorted(column(result, "name")) == ["RAW_ORDERS", "STG_ORDERS", "gone", "ok"]


def test_lineage_check_creates_references_for_unknown_ends() -> None:
    asked: list[list[str]] = []

    def hub_lookup(names: list[str]) -> set[str]:
        asked.append(sorted(names))
        return {MART}

    result = run(
        [
            process("load", [RAW], [STG]),
            process("build", [STG, RAW], [MART, f"{CONN}/DB/SCH/ORDERS_AGG"]),
            table(STG),
        ],
        "lineage-check",
        hub_lookup=hub_lookup,
    )
    assert result.rejects.is_empty()
    # Only the ends the batch does not hold are looked up in the hub.
    assert asked == [sorted([RAW, MART, f"{CONN}/DB/SCH/ORDERS_AGG"])]
    references = result.events.filter(pl.col("source") == "lily:lineage-check")
    assert sorted(references.get_column("qualified_name")) == [
        f"{CONN}/DB/SCH/ORDERS_AGG",
        RAW,
    ]
    for ref in references.iter_rows(named=True):
        assert ref["type_name"] == "Asset"
        assert ref["op"] == "upsert"
        assert ref["event_time"] == datetime(1970, 1, 1, tzinfo=UTC)
        assert json.loads(ref["attributes"]) == {"lily_reference": True}
        assert ref["name"] == ref["qualified_name"].rsplit("/", 1)[-1]
        assert ref["tenant"] == "acme" and ref["classifications"] == []
        # Its raw payload is a valid envelope, so a quarantine replay could reread it.
        again = frame([json.loads(ref["raw"])]).row(0, named=True)
        assert again["qualified_name"] == ref["qualified_name"]
        assert again["event_id"] == ref["event_id"]
    assert result.stats["lineage-check"]["rows_out"] == 5


def test_lineage_check_without_hub_and_settings() -> None:
    events = [process("load", [RAW], [])]
    plain = run(events, "lineage-check")
    assert column(plain, "qualified_name") == ["default/dbt/1/load", RAW]
    typed = run(events, "lineage-check", {"reference_type": "Table"})
    assert column(typed, "type_name") == ["Process", "Table"]
    none = run(events, "lineage-check", {"create_references": False})
    assert column(none, "qualified_name") == ["default/dbt/1/load"]
    # The same end referenced twice, by two batches: the same reference event.
    assert column(plain, "event_id")[1] == column(run(events, "lineage-check"), "event_id")[1]


def test_lineage_reference_is_replaced_when_the_real_record_arrives(tmp_path: Path) -> None:
    hub = LocalHub(tmp_path / "hub")

    def lookup(names: list[str]) -> set[str]:
        return hub.contains("acme", names)

    first = run([process("load", [RAW], [STG]), table(STG)], "lineage-check", hub_lookup=lookup)
    hub.upsert("acme", first.events)
    records = {r["qualified_name"]: r for r in hub.export("acme")}
    assert records[RAW]["type_name"] == "Asset"
    assert records[RAW]["attributes"] == {"lily_reference": True}
    assert records[RAW]["event_time"] == "1970-01-01T00:00:00Z"
    assert records[STG]["attributes"] == {"description": "the real one"}

    # The real table arrives in a later batch: it replaces the reference.
    later = run([table(RAW, "2026-11-24T08:00:00Z")], "lineage-check", hub_lookup=lookup)
    hub.upsert("acme", later.events)
    real = {r["qualified_name"]: r for r in hub.export("acme")}[RAW]
    assert (real["type_name"], real["status"]) == ("Table", "ACTIVE")
    assert real["attributes"] == {"description": "the real one"}
    assert real["event_time"] == "2026-11-24T08:00:00Z"

    # Another process reading it now creates no reference; even one that did would lose.
    again = run([process("reload", [RAW], [MART])], "lineage-check", hub_lookup=lookup)
    assert column(again, "qualified_name") == ["default/dbt/1/reload", MART]
    blind = run([process("reload", [RAW], [MART])], "lineage-check")
    hub.upsert("acme", blind.events)
    after = {r["qualified_name"]: r for r in hub.export("acme")}
    assert after[RAW] == real
    assert after[MART]["attributes"] == {"lily_reference": True}
