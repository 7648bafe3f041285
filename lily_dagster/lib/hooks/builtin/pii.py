"""pii-classify and pii-mask: personal data found by column name and sample values, and
masked in free text, all as vectorised polars expressions.

Names are judged as token sequences, not substrings: a name is split into lower-case words
(camelCase, PascalCase, snake_case, kebab-case, digits, ALLCAPS runs, and glued words of a
small vocabulary such as `CUSTOMEREMAIL`), abbreviations are spelled out (`cc_num`, `dob`,
`tel`, `addr`, `zip`…), and the words naming personal data become one term per kind. The
name holds personal data when its head (the last word, once neutral suffixes such as
`number`, `line`, digits or Salesforce's `__c` are set aside) is such a term and nothing
before it turns it into something else: `customer_email` is an e-mail, `email_campaign_id`
an identifier of a campaign, `has_email` a flag, `server_ip` a machine's address. Sample
values are validated, not pattern-matched: cards by Luhn, IBANs by their mod-97 checksum,
e-mails, phones, IPv4/IPv6 and national ids by shape.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from typing import Any

import polars as pl
from pydantic import Field, field_validator

from lily_dagster.lib.enrichment import SEP, on_distinct, with_tags
from lily_dagster.lib.hooks import (
    HookContext,
    PluginOptions,
    known_kinds,
    polars_regex,
    register_hook,
)

# The kinds of personal data, as in the `PII:<kind>` tags.
KINDS = {
    "email": "e-mail addresses",
    "phone": "phone, mobile and fax numbers",
    "national_id": "social security, national insurance, passport, tax, driving licence ids",
    "person_name": "first, last, full names; names of customers, contacts, employees…",
    "address": "postal addresses: street, house number, address lines, postal and zip codes",
    "ip_address": "IPv4 and IPv6 addresses of people (clients, visitors), not of servers",
    "card_number": "payment card numbers (PAN)",
    "birth_date": "dates of birth",
    "bank_account": "IBANs and bank account numbers",
}
DEFAULT_TAGS = ["PII", "GDPR:personal-data"]

# --- names -----------------------------------------------------------------------------

# One upper-case term per kind: the name's words are lower case, so a term never collides
# with a word of the name.
TERMS = {
    "EMAIL": "email",
    "PHONE": "phone",
    "NATID": "national_id",
    "PNAME": "person_name",
    "ADDRESS": "address",
    "IP": "ip_address",
    "CARD": "card_number",
    "DOB": "birth_date",
    "IBAN": "bank_account",
}
_TERM = "(?:" + "|".join(TERMS) + ")"


def _words(words: str, longest_first: bool = False) -> str:
    """A regex alternation of the words (longest first: `address` before `addr`)."""
    split = words.split()
    return "(?:" + "|".join(sorted(split, key=len, reverse=True) if longest_first else split) + ")"


# Words that glued together make a personal-data name (`CUSTOMEREMAIL`, `lastname`,
# `IPADDRESS`); a glued word made of anything else stays whole, and so is not personal data.
_GLUE = _words(
    """email mail phone number num nbr no mobile mob cell tel fax home work first last middle
    family maiden name nm date of birth day dob zip post postal code street address addr
    billing shipping mailing ship bill to house line ip remote client user customer cust
    contact person primary secondary emergency employee emp patient member guest recipient
    card credit debit holder account acct bank iban social security national insurance
    passport tax id ssn driver drivers license licence full given cc""",
    longest_first=True,
)
# People whose name a `<who>_name` column holds (`customer_name`; not `product_name`).
_PEOPLE = _words(
    """customer contact employee patient person member passenger guest recipient holder
    cardholder beneficiary student driver applicant candidate subscriber buyer rep agent
    teacher doctor physician nurse spouse parent mother father kin payee payer insured
    policyholder traveler traveller visitor requester assignee assistant manager supervisor
    dependent guarantor reporter author creator approver reviewer sender signer owner
    borrower witness caller"""
)

# Words before a term that make it a count, a flag or a hash of personal data.
_NOT_THE_DATA = _words(
    """is has have can should allow allows count cnt total number nb n distinct unique valid
    invalid missing hashed hash sha md masked redacted anonymised anonymized tokenised
    tokenized pseudonymised pseudonymized max min avg sum pct percent ratio share dup
    duplicate fake dummy"""
)
# Machines, whose IP and addresses are not a person's.
_MACHINES = _words(
    """server host node gateway router proxy dns nat vpc subnet cluster instance db database
    machine pod container service balancer lb vm bind listen api endpoint internal private
    static floating elastic virtual broker master worker replica dst dest destination"""
)
# Organisations and places, whose address, phone and e-mail are not a person's.
_ORGS = _words(
    """store warehouse office branch facility depot plant hq headquarters company corporate
    merchant business venue site hotel restaurant support helpdesk hotline employer org
    organisation organization agency bank"""
)
# Addresses that are not postal.
_NOT_POSTAL = _words(
    """mac memory web url contract wallet smtp bitcoin btc eth ethereum crypto token hardware
    broadcast network multicast base"""
)

# Ordered rewrites of the space-separated words: abbreviations, then terms, then vetoes.
NAME_RULES: list[tuple[str, str]] = [
    # Abbreviations.
    (r"\b(?:nbr|num|no|nr|nmbr|numbr)\b", "number"),
    (r"\b(?:nm|nme)\b", "name"),
    (r"\b(?:addr|adr|addrs|adrs)\b", "address"),
    (r"\bln\b", "line"),
    (r"\bcd\b", "code"),
    (r"\bdt\b", "date"),
    (r"\bcust\b", "customer"),
    (r"\bemp\b", "employee"),
    (r"\bacct\b", "account"),
    (r"\be mail\b", "email"),
    # Terms; an e-mail or IP address is not a postal address, so these come first.
    (r"\b(?:email|mail)(?: address(?:es)?)?\b", "EMAIL"),
    (
        r"\b(?:ip|ipv [46]|ip v [46]|remote address|(?:x )?forwarded for)(?: address(?:es)?)?\b",
        "IP",
    ),
    (r"\bEMAIL b?cc\b", "EMAIL"),  # the copies of an e-mail, not a card
    (r"\bprimary account number\b", "CARD"),
    (r"\b(?:(?:credit|debit|payment) )?card number\b|\b(?:credit|debit) card\b", "CARD"),
    (r"\b(?:cc|ccn|pan)\b", "CARD"),
    (r"\b(?:iban|bban|bank account)\b", "IBAN"),
    (r"\bsocial security\b|\bssn\b|\bni number\b|\b(?:nino|nin|nric|tin|cpf|pesel)\b", "NATID"),
    (r"\bnational (?:id|identity|identification|insurance)(?: card)?\b", "NATID"),
    (r"\bpassport\b|\btax (?:id|identification)\b", "NATID"),
    (r"\b(?:drivers?|driving) licen[cs]e\b|\b(?:nhs|aadhaar) number\b|\baadhaar\b", "NATID"),
    (r"\bdate of birth\b|\bbirth (?:date|day)\b|\bdate birth\b", "DOB"),
    (r"\b(?:birthdate|birthday|dob|bday)\b", "DOB"),
    (r"\b(?:first|last|middle|full|given|family|maiden|fore|sur|christian) name\b", "PNAME"),
    (r"\b(?:surname|forename|firstname|lastname|fullname|fname|lname|mname)\b", "PNAME"),
    (rf"\b(?:[flm]|{_PEOPLE}) name\b", "PNAME"),
    (r"\b(?:contact|ph|cell) number\b|\bcell phone\b", "PHONE"),
    (r"\b(?:telephone|phone|cellphone|tel|msisdn|fax|mobile|mob)\b", "PHONE"),
    (r"\b(?:postal|post|zip) code\b|\b(?:postcode|zipcode|zip|plz)\b", "ADDRESS"),
    (r"\bstreet(?: address| name| number)?\b|\b(?:house|suite|apt|flat) number\b", "ADDRESS"),
    (r"\bapartment\b", "ADDRESS"),
    (r"\baddress(?: line)?\b", "ADDRESS"),
    # Terms in a row: the last is the head (`mobile_phone`, `billing_address_phone`).
    (rf"\b(?:{_TERM} )+({_TERM})\b", "${1}"),
    # Vetoes: words before a term that make the name an attribute of personal data (a
    # count, a flag, a hash) rather than personal data...
    (rf"^.*\b{_NOT_THE_DATA}\b(?: \S+)*? {_TERM}\b.*$", ""),
    # ... or the data of a machine or an organisation rather than of a person.
    (rf"^.*\b{_MACHINES} IP\b.*$", ""),
    (rf"^.*\b(?:{_MACHINES}|{_ORGS}|{_NOT_POSTAL}) ADDRESS\b.*$", ""),
    (rf"^.*\b{_ORGS} (?:PHONE|EMAIL)\b.*$", ""),
    (r"^.*\b(?:noreply|shared|team|group|distribution|system) EMAIL\b.*$", ""),
    (r"^.*\bgift CARD\b.*$", ""),
    # Neutral words after the head: `phone_number`, `address_line_1`, `email_2`, `Email__c`.
    (
        r"(?: (?:\d+|[a-z]|number|numbers|line|value|val|str|string|text|txt|raw|clean|cleaned"
        r"|normali[sz]ed|norm|formatted|lower|lowercase|original|orig|full|pii))+$",
        "",
    ),
]


def name_words(name: pl.Expr) -> pl.Expr:
    """The name as lower-case words separated by single spaces."""
    return (
        name.str.replace_all(r"(?i)ipv([46])", "_ipv${1}_")  # IPv4: not I + Pv4
        .str.replace_all(r"([a-z0-9])([A-Z])", "${1} ${2}")  # camelCase
        .str.replace_all(r"([A-Z]+)([A-Z][a-z])", "${1} ${2}")  # IPAddress, HTTPServer
        .str.replace_all(r"([A-Za-z])([0-9])", "${1} ${2}")  # address1
        .str.replace_all(r"([0-9])([A-Za-z])", "${1} ${2}")
        .str.to_lowercase()
        .str.replace_all(r"[^a-z0-9]+", " ")
        .str.replace_all(rf"\b({_GLUE})({_GLUE})({_GLUE})?({_GLUE})?\b", "${1} ${2} ${3} ${4}")
        .str.replace_all(r" +", " ")
        .str.strip_chars()
    )


def name_term(name: pl.Expr) -> pl.Expr:
    """The term (a key of TERMS) a column name's head is, or null."""
    words = name_words(name)
    for pattern, replacement in NAME_RULES:
        words = words.str.replace_all(pattern, replacement)
    return words.str.extract(rf"(?:^| )({_TERM})$", 1)


# --- sample values ------------------------------------------------------------------------

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
_NINO = re.compile(
    r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
)
_IPV4 = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?![\w.])"
)
_IPV6 = re.compile(r"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")
# International (+44 20 7946 0958, 0044…), or national with separators: (415) 555-0100,
# 415-555-0100, 020 7946 0958. Bare digit runs are identifiers as often as phone numbers.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+|00)[1-9][\d ().-]{6,20}\d(?!\d)"
    r"|(?<![\w-])(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[ .-])\d{3}[ .-]\d{4}(?![\w-])"
    r"|(?<![\w-])\(?0[1-9]\d{0,3}\)?[ .-]\d{3,4}[ .-]?\d{3,4}(?![\w-])"
)
# Sample lists that may hold any of the above: the others are never parsed in Python.
CANDIDATE_SAMPLES = r"(?s)^(.*(?:@|\d[\d ().-]{5,}\d|[0-9A-Fa-f]:[0-9A-Fa-f]*:|[A-Z]{2}\d{2}).*)$"


def luhn_valid(number: str) -> bool:
    """The Luhn checksum of a payment card number (digits only, 13 to 19 of them)."""
    if not number.isdigit() or not 13 <= len(number) <= 19 or len(set(number)) == 1:
        return False
    total = 0
    for i, char in enumerate(reversed(number)):
        digit = int(char) * (2 if i % 2 else 1)
        total += digit - 9 if digit > 9 else digit
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """ISO 13616: country, check digits and account, whose mod-97 checksum is 1."""
    iban = iban.replace(" ", "").upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", iban):
        return False
    return int("".join(str(int(c, 36)) for c in iban[4:] + iban[:4])) % 97 == 1


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def value_kinds(value: str) -> set[str]:
    """The kinds of personal data in one value (a value or a free text)."""
    found = set()
    if _EMAIL.search(value):
        found.add("email")
    if any(iban_valid(m) for m in _IBAN.findall(value)):
        found.add("bank_account")
    if any(luhn_valid(_digits(m)) for m in _CARD.findall(value)):
        found.add("card_number")
    if _SSN.search(value) or _NINO.search(value):
        found.add("national_id")
    if _IPV4.search(value) or any(_is_ipv6(m) for m in _IPV6.findall(value)):
        found.add("ip_address")
    # A card, an IBAN, an IP or an id has digits a phone pattern could take for its own.
    if not found - {"email"} and any(_is_phone(m) for m in _PHONE.findall(value)):
        found.add("phone")
    return found


def _is_phone(match: str) -> bool:
    """E.164 has at most 15 digits; a national number 10 or 11 with its trunk prefix. A
    0-padded identifier (0012345678) is no international number: 00 needs separators."""
    digits = _digits(match)
    if match.startswith("+"):
        return 8 <= len(digits) <= 15
    if match.startswith("00"):
        return 8 <= len(digits) - 2 <= 15 and bool(re.search(r"[ ().-]", match))
    return 10 <= len(digits) <= 11


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def sample_kinds(samples: str) -> list[str]:
    """The kinds of personal data a column's samples (a JSON list) hold: those at least half
    of its non-empty samples show (one random number in ten passes Luhn)."""
    try:
        parsed = json.loads(samples)
    except ValueError:
        parsed = samples
    values = [str(v).strip() for v in (parsed if isinstance(parsed, list) else [parsed])]
    values = [v for v in values if v and v.lower() not in ("null", "none", "n/a")]
    counts: dict[str, int] = {}
    for value in values:
        for kind in value_kinds(value):
            counts[kind] = counts.get(kind, 0) + 1
    return [kind for kind in KINDS if 2 * counts.get(kind, 0) >= max(len(values), 1)]


# --- the hooks ----------------------------------------------------------------------------

_MARK = "\x1e"  # a kind found, when kinds are not tags (by_kind_tag: false)


@register_hook("pii-classify")
class PiiClassify:
    """Columns holding personal data get classifications: `PII`, `GDPR:personal-data` and
    `PII:<kind>` (email, phone, national_id, person_name, address, ip_address, card_number,
    birth_date, bank_account), judged by the column name's words and, where given, by the
    `sample_values` attribute (validated: Luhn, IBAN checksum, shapes).

    settings: type_names (default [Column]), tags (default [PII, GDPR:personal-data]),
    kinds (default all), by_kind_tag (default true).
    """

    name = "pii-classify"
    stage = "pre_ingest"

    class Options(PluginOptions):
        type_names: list[str] = Field(
            default_factory=lambda: ["Column"], description="Asset types that are classified."
        )
        tags: list[str] = Field(
            default_factory=lambda: list(DEFAULT_TAGS),
            description="Classifications added to an asset holding personal data.",
        )
        kinds: list[str] = Field(
            default_factory=lambda: list(KINDS),
            description=f"Kinds of personal data looked for: {', '.join(KINDS)}.",
        )
        by_kind_tag: bool = Field(True, description="Also add a `PII:<kind>` tag per kind found.")

        @field_validator("kinds")
        @classmethod
        def _known(cls, value: list[str]) -> list[str]:
            return known_kinds(value, KINDS)

    def configure(self, options: Options) -> dict[str, Any]:
        return options.model_dump()

    def apply(self, events: pl.DataFrame, config: dict[str, Any], ctx: HookContext) -> pl.DataFrame:
        in_scope = pl.col("type_name").is_in(config["type_names"]) & (pl.col("op") == "upsert")
        # Attributes are parsed only where they name sample values (a cheap substring test):
        # parsing every row's JSON would cost more than the whole hook.
        has_samples = in_scope & pl.col("attributes").str.contains("sample_values", literal=True)
        samples = pl.when(has_samples).then(pl.col("attributes"))
        # What each kind found adds: its tag, or a mark that something was found.
        piece = {k: f"PII:{k}{SEP}" if config["by_kind_tag"] else _MARK for k in config["kinds"]}
        by_name = (
            pl.when(in_scope)
            .then(name_term(pl.col("name")))
            .replace_strict(
                {t: piece[k] for t, k in TERMS.items() if k in piece},
                default=None,
                return_dtype=pl.String,
            )
        )
        by_samples = (
            samples.str.json_path_match("$.sample_values")
            .str.extract(CANDIDATE_SAMPLES, 1)
            .map_elements(_sample_pieces(piece), return_dtype=pl.String)
        )
        # One linear expression (polars computes shared sub-expressions of an eager frame
        # again): the pieces found, prefixed with the tags when there are any.
        prefix = "".join(t + SEP for t in config["tags"]).replace("$", "$$")
        tags = (
            pl.concat_str([by_name, by_samples], ignore_nulls=True)
            .str.replace(r"(?s)^(.+)$", prefix + "${1}")
            .str.replace_all(_MARK, "", literal=True)
            .replace("", None)
        )
        # Judged once per distinct (type, op, name, samples), merged once per distinct
        # (current tags, added tags): names and tag sets repeat across a batch.
        # Out of scope, name and samples do not matter: they are left out of the key, so
        # the distinct tables and processes of a batch collapse to one key per type.
        keys = [
            pl.col("type_name"),
            pl.col("op"),
            pl.when(in_scope).then(pl.col("name")),
            samples,
        ]
        tagged = on_distinct(events, keys, {"__tags": tags})
        merge_keys = [pl.col("classifications"), pl.col("__tags")]
        merged = on_distinct(
            tagged, merge_keys, {"classifications": with_tags("classifications", pl.col("__tags"))}
        )
        return merged.drop("__tags")


def _sample_pieces(piece: dict[str, str]) -> Callable[[str], str | None]:
    def pieces(samples: str) -> str | None:
        return "".join(piece[k] for k in sample_kinds(samples) if k in piece) or None

    return pieces


# Free-text shapes that pii-mask replaces, by kind; order matters (most specific first).
VALUE_PATTERNS = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    "national_id": r"\b\d{3}-\d{2}-\d{4}\b",
    "card_number": r"\b(?:\d[ -]?){12,18}\d\b",
    "ip_address": r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b",
    # International (+44 20 7946 0123), or national with an area code: (415) 555-0100,
    # 415-555-0100. Dates (2024-01-15) and IPs do not have these shapes.
    "phone": (
        r"\+\d{1,3}[ .-]?\(?\d{1,4}\)?[ .-]?\d{3,4}[ .-]?\d{3,4}\b"
        r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}\b|\b\d{3}[ .-]\d{3}[ .-]\d{4}\b"
    ),
}


MASKS = {
    "email": "[email]",
    "national_id": "[national-id]",
    "card_number": "[card-number]",
    "ip_address": "[ip-address]",
    "phone": "[phone]",
}


@register_hook("pii-mask")
class PiiMask:
    """Personal data in free text replaced by a marker (`[email]`, `[phone]`, …): the
    description of every asset, and the name of assets whose type matches `name_types`
    (default: dashboards and reports).

    settings: kinds (default all), name_types (regex, default `Dashboard|Report|Sheet`).
    """

    name = "pii-mask"
    stage = "pre_ingest"

    class Options(PluginOptions):
        kinds: list[str] = Field(
            default_factory=lambda: list(MASKS),
            description=f"Kinds of personal data masked: {', '.join(MASKS)}.",
        )
        name_types: str = Field(
            "Dashboard|Report|Sheet",
            description="Regex of the asset types whose names are masked too.",
        )

        @field_validator("kinds")
        @classmethod
        def _known(cls, value: list[str]) -> list[str]:
            return known_kinds(value, MASKS)

        @field_validator("name_types")
        @classmethod
        def _regex(cls, value: str) -> str:
            return polars_regex(value, "")

    def configure(self, options: Options) -> dict[str, Any]:
        return options.model_dump()

    def apply(self, events: pl.DataFrame, config: dict[str, Any], ctx: HookContext) -> pl.DataFrame:
        def masked(expr: pl.Expr) -> pl.Expr:
            for kind in config["kinds"]:
                expr = expr.str.replace_all(VALUE_PATTERNS[kind], MASKS[kind])
            return expr

        name_in_scope = pl.col("type_name").str.contains(config["name_types"])
        # Masked once per distinct text: descriptions repeat (templates, copied docs).
        events = on_distinct(
            events, [pl.col("description")], {"description": masked(pl.col("description"))}
        )
        # Names out of scope are keyed as null (they are distinct: tables, processes) and
        # kept as they are.
        in_scope_name = pl.when(name_in_scope).then(pl.col("name"))
        events = on_distinct(events, [in_scope_name], {"__masked": masked(in_scope_name)})
        return events.with_columns(pl.coalesce("__masked", "name").alias("name")).drop("__masked")
