"""The Great Expectations 1.x suite Lily runs on a sample of each tenant's hub records.

Row-level rules run in polars on every event (validation.py); GX adds a statistical look at
what ended in the hub: nulls, uniqueness, allowed values, lengths, and aggregates. GX is
imported here only, when a check runs (its import costs ~5 s).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from lily_dagster.lib.validation import TYPE_NAME_PATTERN

SAMPLE_COLUMNS = ["qualified_name", "type_name", "name", "status", "event_id", "description"]


@dataclass
class SuiteResult:
    success: bool
    rows_sampled: int
    expectations: list[dict[str, Any]] = field(default_factory=list)

    def failed(self) -> list[str]:
        return [
            f"{e['expectation']}({e.get('column') or ''})"
            for e in self.expectations
            if not e["success"]
        ]


def run_hub_suite(records: pl.DataFrame, sample_size: int = 10_000, seed: int = 0) -> SuiteResult:
    """Validate a sample of hub records (RECORD_SCHEMA) with the GX suite."""
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    sample = records.select(SAMPLE_COLUMNS)
    if sample.height > sample_size:
        sample = sample.sample(sample_size, seed=seed)
    frame = sample.to_pandas()
    context = gx.get_context(mode="ephemeral")
    batch = (
        context.data_sources.add_pandas("lily")
        .add_dataframe_asset("hub_records")
        .add_batch_definition_whole_dataframe("sample")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    suite = gx.ExpectationSuite(name="lily_hub_records")
    e = gx.expectations
    for column in ("qualified_name", "type_name", "name", "status", "event_id"):
        suite.add_expectation(e.ExpectColumnValuesToNotBeNull(column=column))
    suite.add_expectation(e.ExpectColumnValuesToBeUnique(column="qualified_name"))
    suite.add_expectation(
        e.ExpectColumnValuesToBeInSet(column="status", value_set=["ACTIVE", "DELETED"])
    )
    suite.add_expectation(
        e.ExpectColumnValuesToMatchRegex(column="type_name", regex=TYPE_NAME_PATTERN)
    )
    suite.add_expectation(
        e.ExpectColumnValueLengthsToBeBetween(column="name", min_value=1, max_value=1024)
    )
    # Aggregates: most of a hub is live, and descriptions are not all empty.
    suite.add_expectation(
        e.ExpectColumnProportionOfUniqueValuesToBeBetween(column="event_id", min_value=0.5)
    )
    suite.add_expectation(
        e.ExpectColumnValuesToBeInSet(column="status", value_set=["ACTIVE"], mostly=0.5)
    )
    result = batch.validate(suite)
    expectations = []
    for item in result.results:
        config = item.expectation_config
        details = item.result or {}
        expectations.append(
            {
                "expectation": config.type if config else "?",
                "column": (config.kwargs or {}).get("column") if config else None,
                "success": bool(item.success),
                "unexpected_count": details.get("unexpected_count"),
                "unexpected_percent": details.get("unexpected_percent"),
                "observed_value": details.get("observed_value"),
            }
        )
    return SuiteResult(bool(result.success), frame.shape[0], expectations)
