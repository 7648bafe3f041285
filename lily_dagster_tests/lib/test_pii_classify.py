"""pii-classify on real warehouse names: tokens rather than substrings, vetoes that make a
name an attribute of personal data, validated sample values, the default chain, and the
labelled evaluation set (benchmarks/data/pii_column_names.csv)."""

from __future__ import annotations

import json

import polars as pl
import pytest

from lily_dagster.bench.pii import DEFAULT_SET, evaluate, load_set
from lily_dagster.lib.hooks import tenant_chain
from lily_dagster.lib.hooks.builtin.pii import iban_valid, luhn_valid, name_words
from lily_dagster.settings import LilyConfigFile
from lily_dagster_tests.lib.test_builtin_hooks import BASE_TAGS, column, envelope, run


def tags_of(name: str, samples: list[str] | None = None) -> list[str]:
    attributes = {"sample_values": samples} if samples is not None else None
    (tags,) = column(
        run([envelope(name, attributes=attributes)], "pii-classify"), "classifications"
    )
    return tags


# --- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        # Missed before (issue 12).
        ("customerEmail", "email"),
        ("cc_num", "card_number"),
        ("iban", "bank_account"),
        ("postal_code", "address"),
        # The other personal-data names.
        ("customer_email", "email"),
        ("home_phone", "phone"),
        ("billing_address", "address"),
        ("date_of_birth", "birth_date"),
        ("first_name", "person_name"),
        # Shapes of the same: Snowflake upper case, glued words, abbreviations, suffixes.
        ("CUSTOMEREMAIL", "email"),
        ("CustomerEmailAddress", "email"),
        ("e-mail", "email"),
        ("Email__c", "email"),
        ("CC_NUM", "card_number"),
        ("ccn", "card_number"),
        ("CREDITCARDNUMBER", "card_number"),
        ("IBAN_NUMBER", "bank_account"),
        ("bank_acct_no", "bank_account"),
        ("POSTALCODE", "address"),
        ("zip_cd", "address"),
        ("addr_ln1", "address"),
        ("MailingPostalCode", "address"),
        ("tel_no", "phone"),
        ("MobilePhone", "phone"),
        ("phone_e164", "phone"),
        ("DOB", "birth_date"),
        ("DateOfBirth", "birth_date"),
        ("ssn", "national_id"),
        ("nin", "national_id"),
        ("passportNumber", "national_id"),
        ("fname", "person_name"),
        ("cust_nm", "person_name"),
        ("cardholder_name", "person_name"),
        ("ipv6", "ip_address"),
        ("IPv4Address", "ip_address"),
        ("remote_addr", "ip_address"),
    ],
)
def test_personal_data_names_are_classified_with_their_kind(name: str, kind: str) -> None:
    assert tags_of(name) == [*BASE_TAGS, f"PII:{kind}"]


@pytest.mark.parametrize(
    "name",
    [
        # Flagged before (issue 12): the personal-data word qualifies another noun.
        "email_campaign_id",
        "ip_range_count",
        "address_type_code",
        "email_template",
        "phone_type",
        # Counts, flags, statuses, hashes, types of personal data are not personal data.
        "emailCampaignId",
        "EMAIL_CAMPAIGN_ID",
        "email_domain",
        "email_status",
        "is_email_verified",
        "has_phone",
        "num_emails",
        "email_hash",
        "hashed_email",
        "birthday_campaign_id",
        "first_name_length",
        "card_type",
        "cc_exp_year",
        "iban_country_code",
        "bank_account_id",
        "mobile_app_version",
        "address_id",
        "zip_file",
        # Machines' and organisations' data, and names that only look alike.
        "server_ip",
        "mac_address",
        "store_phone",
        "support_email",
        "product_name",
        "hostname",
        "ship_date",
        "hotel",
        "telemetry",
        "intel",
        "shipping_city",
        "customer_id",
    ],
)
def test_attributes_of_personal_data_and_look_alikes_are_not_classified(name: str) -> None:
    assert tags_of(name) == []


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("customerEmail", "customer email"),
        ("CustomerEmailAddress", "customer email address"),
        ("CUSTOMER_EMAIL", "customer email"),
        ("CUSTOMEREMAIL", "customer email"),
        ("e-mail", "e mail"),
        ("IPAddress", "ip address"),
        ("IPv4Address", "ipv 4 address"),
        ("address1", "address 1"),
        ("Email__c", "email c"),
        ("METADATA$FILENAME", "metadata filename"),
        ("emailcampaignid", "emailcampaignid"),  # not all known words: stays one word
    ],
)
def test_names_split_into_words(name: str, words: str) -> None:
    assert pl.select(name_words(pl.lit(name))).item() == words


def test_each_distinct_name_is_judged_once_and_rows_keep_their_order() -> None:
    names = ["customer_email", "email_campaign_id", "customer_email", "cc_num", "AMOUNT"]
    events = [envelope(n, event_id=f"e{i}", qualified_name=f"T/{i}") for i, n in enumerate(names)]
    kinds = [
        [t for t in tags if t.startswith("PII:")]
        for tags in column(run(events, "pii-classify"), "classifications")
    ]
    assert kinds == [["PII:email"], [], ["PII:email"], ["PII:card_number"], []]


# --- sample values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "valid"),
    [
        ("4111111111111111", True),
        ("5500000000000004", True),
        ("378282246310005", True),  # Amex, 15 digits
        ("4111111111111112", False),
        ("9537610396283960", False),
        ("0000000000000000", False),  # passes the sum, but no card is all one digit
        ("411111111111", False),  # 12 digits: too short
        ("4111-1111-1111-1111", False),  # digits only
    ],
)
def test_luhn(number: str, valid: bool) -> None:
    assert luhn_valid(number) is valid


@pytest.mark.parametrize(
    ("iban", "valid"),
    [
        ("GB82WEST12345698765432", True),
        ("GB82 WEST 1234 5698 7654 32", True),
        ("DE89370400440532013000", True),
        ("FR1420041010050500013M02606", True),
        ("GB00WEST12345698765432", False),  # check digits wrong
        ("DE89370400440532013001", False),  # one digit changed
        ("NL91ABNA0417164300X", False),
        ("GB82WEST", False),
    ],
)
def test_iban_checksum(iban: str, valid: bool) -> None:
    assert iban_valid(iban) is valid


@pytest.mark.parametrize(
    ("samples", "kind"),
    [
        (["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005"], "card_number"),
        (["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000"], "bank_account"),
        (["jdoe@acme.com", "ann.lee@example.org"], "email"),
        (["+44 20 7946 0958", "(415) 555-0100", "020 7946 0958"], "phone"),
        (["2001:db8::1", "fe80::1ff:fe23:4567:890a"], "ip_address"),
        (["203.0.113.7", "198.51.100.23"], "ip_address"),
        (["123-45-6789", "AB 12 34 56 C"], "national_id"),
    ],
)
def test_valid_samples_classify_a_column_whatever_its_name(samples: list[str], kind: str) -> None:
    assert tags_of("VALUE", samples) == [*BASE_TAGS, f"PII:{kind}"]


@pytest.mark.parametrize(
    "samples",
    [
        # Random 16-digit numbers: card-shaped, failing Luhn.
        ["9537610396283960", "4556250748849463", "1434924069037136", "8397381398802227"],
        # IBAN-shaped with wrong check digits.
        ["GB00WEST12345698765432", "DE00370400440532013000"],
        # Times, MAC addresses, versions, dates, 0-padded ids, amounts.
        ["10:30:00", "12:00:01"],
        ["00:1a:2b:3c:4d:5e"],
        ["1.2.3", "10.4.0"],
        ["2024-01-15", "2025-12-31"],
        ["0012345678", "0000012345"],
        ["12.50", "1000000", "N/A"],
        ["000-12-3456"],  # no SSN starts with 000
    ],
)
def test_invalid_samples_classify_nothing(samples: list[str]) -> None:
    assert tags_of("VALUE", samples) == []


def test_one_valid_card_among_random_numbers_is_chance_not_a_card_column() -> None:
    # About one random number in ten passes Luhn: at least half the samples must.
    samples = ["4111111111111111", "9537610396283960", "4556250748849463", "1434924069037136"]
    assert tags_of("VALUE", samples) == []


def test_name_and_samples_add_each_kind_once() -> None:
    tags = tags_of("customer_email", ["jdoe@acme.com"])
    assert tags == [*BASE_TAGS, "PII:email"]
    assert tags_of("notes", ["jdoe@acme.com"]) == [*BASE_TAGS, "PII:email"]
    assert tags_of("email_campaign_id", ["4111 1111 1111 1111"]) == [*BASE_TAGS, "PII:card_number"]


def test_kinds_and_by_kind_tag_apply_to_samples_too() -> None:
    events = [
        envelope("iban", event_id="a", qualified_name="T/a"),
        envelope(
            "VALUE",
            event_id="b",
            qualified_name="T/b",
            attributes={"sample_values": ["GB82 WEST 1234 5698 7654 32"]},
        ),
        envelope(
            "VALUE",
            event_id="c",
            qualified_name="T/c",
            attributes={"sample_values": ["jdoe@acme.com"]},
        ),
    ]
    only_bank = run(events, "pii-classify", {"kinds": ["bank_account"]})
    assert column(only_bank, "classifications") == [
        [*BASE_TAGS, "PII:bank_account"],
        [*BASE_TAGS, "PII:bank_account"],
        [],
    ]
    plain = run(events, "pii-classify", {"by_kind_tag": False, "tags": ["Sensitive"]})
    assert column(plain, "classifications") == [["Sensitive"]] * 3


def test_samples_that_are_not_a_json_list_are_judged_as_one_value() -> None:
    result = run([envelope("VALUE", attributes={"sample_values": "jdoe@acme.com"})], "pii-classify")
    assert column(result, "classifications") == [[*BASE_TAGS, "PII:email"]]
    assert json.loads(column(result, "attributes")[0])["sample_values"] == "jdoe@acme.com"


# --- the default chain ------------------------------------------------------------------------


def test_default_pre_ingest_chain_classifies_but_does_not_mask() -> None:
    chain = [h.name for h in tenant_chain(LilyConfigFile(), "acme", "pre_ingest")]
    assert chain == ["erased-subjects", "owner-normalise", "pii-classify"]


# --- the labelled evaluation set ----------------------------------------------------------------


def test_evaluation_set_is_large_labelled_and_has_both_classes() -> None:
    rows = load_set(DEFAULT_SET)
    assert len(rows) >= 300
    assert len({r["name"] for r in rows}) == len(rows)
    pii = [r for r in rows if r["is_pii"]]
    assert 0.3 < len(pii) / len(rows) < 0.7
    assert all(r["kind"] for r in pii) and not any(r["kind"] for r in rows if not r["is_pii"])
    known = {"email", "phone", "national_id", "person_name", "address", "ip_address",
             "card_number", "birth_date", "bank_account"}  # fmt: skip
    assert {r["kind"] for r in pii} == known
    assert any(r["samples"] for r in rows)


def test_precision_and_recall_on_the_evaluation_set() -> None:
    result = evaluate(DEFAULT_SET)
    missed = result["misclassified"]
    assert result["precision"] >= 0.97, missed
    assert result["recall"] >= 0.97, missed
    assert result["tp"] + result["fn"] == result["pii"] and result["names"] >= 300
