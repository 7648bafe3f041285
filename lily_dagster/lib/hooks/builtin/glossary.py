"""glossary-tags: classifications and glossary terms by rules on qualified names and types."""

from __future__ import annotations

from typing import Any

import polars as pl
from pydantic import Field, field_validator, model_validator

from lily_dagster.lib.enrichment import on_distinct, tag_string, with_tags
from lily_dagster.lib.hooks import HookContext, PluginOptions, polars_regex, register_hook


class GlossaryRule(PluginOptions):
    """One rule: what it matches, and what it adds."""

    qualified_name: str = Field(description="Regex on the asset's qualified name.")
    type_names: list[str] = Field(
        default_factory=list, description="Asset types it applies to (empty: every type)."
    )
    add_classifications: list[str] = Field(default_factory=list, description="Tags added.")
    add_terms: list[str] = Field(default_factory=list, description="Glossary terms added.")

    @field_validator("qualified_name")
    @classmethod
    def _regex(cls, value: str) -> str:
        return polars_regex(value, "")

    @model_validator(mode="after")
    def _adds_something(self) -> GlossaryRule:
        if not self.add_classifications and not self.add_terms:
            raise ValueError("adds nothing (add_classifications or add_terms)")
        return self


@register_hook("glossary-tags")
class GlossaryTags:
    """Every matching rule adds its tags and terms (no duplicates; what the event already
    has is kept)."""

    name = "glossary-tags"
    stage = "pre_ingest"

    class Options(PluginOptions):
        rules: list[GlossaryRule] = Field(min_length=1, description="The rules, in order.")

    def configure(self, options: Options) -> list[dict[str, Any]]:
        return [
            {
                "pattern": rule.qualified_name,
                "types": rule.type_names,
                "tags": rule.add_classifications,
                "terms": rule.add_terms,
            }
            for rule in options.rules
        ]

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
