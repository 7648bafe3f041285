"""glossary-tags: classifications and glossary terms by rules on qualified names and types."""

from __future__ import annotations

from typing import Any

import polars as pl

from lily_dagster.lib.enrichment import on_distinct, tag_string, with_tags
from lily_dagster.lib.hooks import (
    HookContext,
    only_settings,
    polars_regex,
    register_hook,
    string_list,
)
from lily_dagster.settings import ConfigError

_RULE_KEYS = {"qualified_name", "type_names", "add_classifications", "add_terms"}


@register_hook("glossary-tags")
class GlossaryTags:
    """settings: rules: [{qualified_name: <regex>, type_names: [..] (optional),
    add_classifications: [..], add_terms: [..]}]. Every matching rule adds its tags and
    terms (no duplicates; what the event already has is kept)."""

    name = "glossary-tags"
    stage = "pre_ingest"

    def configure(self, settings: dict[str, Any]) -> list[dict[str, Any]]:
        only_settings(settings, {"rules"})
        rules = settings.get("rules")
        if not isinstance(rules, list) or not rules:
            raise ConfigError("needs a non-empty list of rules")
        compiled = []
        for i, rule in enumerate(rules):
            if not isinstance(rule, dict) or set(rule) - _RULE_KEYS or "qualified_name" not in rule:
                raise ConfigError(
                    f"rule {i}: expected keys {sorted(_RULE_KEYS)} with qualified_name"
                )
            polars_regex(rule["qualified_name"], f"rule {i}: qualified_name")
            if not rule.get("add_classifications") and not rule.get("add_terms"):
                raise ConfigError(f"rule {i}: adds nothing (add_classifications or add_terms)")
            compiled.append(
                {
                    "pattern": rule["qualified_name"],
                    "types": string_list(rule, "type_names", []),
                    "tags": string_list(rule, "add_classifications", []),
                    "terms": string_list(rule, "add_terms", []),
                }
            )
        return compiled

    def apply(
        self, events: pl.DataFrame, config: list[dict[str, Any]], ctx: HookContext
    ) -> pl.DataFrame:
        tags: list[tuple[pl.Expr, list[str]]] = []
        terms: list[tuple[pl.Expr, list[str]]] = []
        for rule in config:
            hit = pl.col("qualified_name").str.contains(rule["pattern"]) & (
                pl.col("op") == "upsert"
            )
            if rule["types"]:
                hit = hit & pl.col("type_name").is_in(rule["types"])
            if rule["tags"]:
                tags.append((hit, rule["tags"]))
            if rule["terms"]:
                terms.append((hit, rule["terms"]))
        # The rules run per row (qualified names are distinct); the merges once per distinct
        # (classifications, terms, what the rules add). Rows no rule matched stay as they
        # were: null terms stay null.
        flagged = events.with_columns(
            tag_string(tags).alias("__tags") if tags else pl.lit(None, pl.String).alias("__tags"),
            tag_string(terms).alias("__terms")
            if terms
            else pl.lit(None, pl.String).alias("__terms"),
        )
        keys = [
            pl.col("classifications"),
            pl.col("glossary_terms"),
            pl.col("__tags"),
            pl.col("__terms"),
        ]
        merged = on_distinct(
            flagged,
            keys,
            {
                "classifications": with_tags("classifications", pl.col("__tags")),
                "glossary_terms": with_tags("glossary_terms", pl.col("__terms")),
            },
        )
        return merged.drop("__tags", "__terms")
