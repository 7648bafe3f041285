"""pii-classify and pii-mask: personal data found by column name and sample values, and
masked in free text, all as vectorised polars expressions."""

from __future__ import annotations

from typing import Any

import polars as pl

from lily_dagster.lib.enrichment import on_distinct, tag_string, with_tags
from lily_dagster.lib.hooks import (
    HookContext,
    kinds_of,
    only_settings,
    polars_regex,
    register_hook,
    string_list,
)

# Column names that hold personal data, by kind (word-ish boundaries: _ or the ends).
NAME_PATTERNS = {
    "email": r"e_?mail(_?address)?",
    "phone": r"phone(_?number)?|mobile|msisdn|telephone|tel",
    "national_id": r"ssn|social_security(_number)?|national_id|nin|passport(_number)?|tax_id|nric",
    "person_name": r"first_?name|last_?name|full_?name|surname|given_?name|family_?name",
    "address": (
        r"(street_?|home_?|postal_?|billing_?|shipping_?)?address|street|post_?code|zip_?code"
    ),
    "ip_address": r"ip|ip_?address|ipv4|ipv6|client_?ip",
    "card_number": r"card_?number|cc_?number|pan|credit_?card(_number)?",
    "birth_date": r"dob|birth_?date|date_?of_?birth",
}
# Values that are personal data, by kind; order matters for masking (most specific first).
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
DEFAULT_TAGS = ["PII", "GDPR:personal-data"]


def _name_regex(pattern: str) -> str:
    return rf"(?i)(?:^|[_\W])(?:{pattern})(?:$|[_\W])"


@register_hook("pii-classify")
class PiiClassify:
    """Columns holding personal data get classifications: `PII`, `GDPR:personal-data` and
    `PII:<kind>` (email, phone, national_id, person_name, address, ip_address, card_number,
    birth_date), judged by the column name and, where given, the `sample_values` attribute.

    settings: type_names (default [Column]), tags (default [PII, GDPR:personal-data]),
    kinds (default all), by_kind_tag (default true).
    """

    name = "pii-classify"
    stage = "pre_ingest"

    def configure(self, settings: dict[str, Any]) -> dict[str, Any]:
        only_settings(settings, {"type_names", "tags", "kinds", "by_kind_tag"})
        kinds = kinds_of(settings, NAME_PATTERNS)
        return {
            "type_names": string_list(settings, "type_names", ["Column"]),
            "tags": string_list(settings, "tags", DEFAULT_TAGS),
            "kinds": kinds,
            "by_kind_tag": bool(settings.get("by_kind_tag", True)),
        }

    def apply(self, events: pl.DataFrame, config: dict[str, Any], ctx: HookContext) -> pl.DataFrame:
        in_scope = pl.col("type_name").is_in(config["type_names"]) & (pl.col("op") == "upsert")
        # Attributes are parsed only where they name sample values (a cheap substring test):
        # parsing every row's JSON would cost more than the whole hook.
        has_samples = in_scope & pl.col("attributes").str.contains("sample_values", literal=True)
        samples = pl.when(has_samples).then(pl.col("attributes"))
        found = {}
        for kind in config["kinds"]:
            by_name = pl.col("name").str.contains(_name_regex(NAME_PATTERNS[kind]))
            by_value = (
                samples.str.json_path_match("$.sample_values")
                .fill_null("")
                .str.contains(VALUE_PATTERNS[kind])
                if kind in VALUE_PATTERNS
                else pl.lit(False)
            )
            found[kind] = in_scope & (by_name | by_value)
        # EMAIL_ADDRESS and IP_ADDRESS are e-mails and IPs, not postal addresses.
        if "address" in found:
            for other in ("email", "ip_address"):
                if other in found:
                    found["address"] = found["address"] & ~found[other]
        any_pii = pl.any_horizontal(list(found.values()))
        additions = [(any_pii, config["tags"])]
        if config["by_kind_tag"]:
            additions += [(hit, [f"PII:{kind}"]) for kind, hit in found.items()]
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
        tagged = on_distinct(events, keys, {"__tags": tag_string(additions)})
        merge_keys = [pl.col("classifications"), pl.col("__tags")]
        merged = on_distinct(
            tagged, merge_keys, {"classifications": with_tags("classifications", pl.col("__tags"))}
        )
        return merged.drop("__tags")


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

    def configure(self, settings: dict[str, Any]) -> dict[str, Any]:
        only_settings(settings, {"kinds", "name_types"})
        kinds = kinds_of(settings, MASKS)
        name_types = polars_regex(
            settings.get("name_types", "Dashboard|Report|Sheet"), "name_types"
        )
        return {"kinds": kinds, "name_types": name_types}

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
