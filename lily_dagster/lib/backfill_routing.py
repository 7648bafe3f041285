"""Which tenant each row of a backfill batch belongs to: the `tenant` its envelope names, as the
streaming path routes a Kafka message (kafka_source.route_messages).

A row that names no valid tenant (absent, not a string, not a tenant name, not JSON) belongs to
no tenant: `UNROUTED` rows are quarantined under `_unrouted`, with the reason the envelope's
decoder gives them. JSON text is routed column-wise where that is exact: the top-level `tenant`
as a JSON path finds it equals the one `"tenant": "…"` in the text (tenant names need no JSON
escapes); any other row (escaped keys, duplicate or nested `tenant` keys, bad UTF-8) is parsed
on its own.
"""

from __future__ import annotations

import polars as pl

from lily_dagster.lib.payload_tenant import payload_tenant
from lily_dagster.settings import TENANT_PATTERN

UNROUTED = ""  # the group of rows that name no valid tenant
_TENANT_KEY = '"tenant"'
_TENANT_STRING = r'"tenant"\s*:\s*"([a-z0-9][a-z0-9-]{0,62})"'


def tenant_column(frame: pl.DataFrame, is_payloads: bool) -> pl.Series:
    """Each row's tenant, or UNROUTED."""
    if is_payloads:
        return _payload_tenants(frame.get_column("value"))
    if "tenant" not in frame.columns or frame.schema["tenant"] not in (pl.String, pl.Categorical):
        return pl.Series("tenant", [UNROUTED] * frame.height, pl.String)
    named = frame.get_column("tenant").cast(pl.String)
    valid = named.str.contains(TENANT_PATTERN).fill_null(False)
    return pl.select(pl.when(valid).then(named).otherwise(pl.lit(UNROUTED))).to_series()


def _payload_tenants(values: pl.Series) -> pl.Series:
    text = values.cast(pl.String, strict=False) if values.dtype == pl.Binary else values
    frame = pl.DataFrame({"text": text}).with_columns(
        pl.col("text").str.json_path_match("$.tenant").alias("path"),
        pl.col("text").str.extract(_TENANT_STRING, 1).alias("literal"),
        pl.col("text").str.count_matches(_TENANT_KEY, literal=True).alias("keys"),
    )
    exact = (
        (pl.col("keys") == 1) & (pl.col("path") == pl.col("literal")) & pl.col("path").is_not_null()
    )
    fast = frame.select(pl.when(exact).then(pl.col("path"))).to_series()
    slow = fast.is_null()
    if not slow.any():
        return fast.alias("tenant")
    parsed = [_parsed_tenant(v) for v in values.filter(slow).to_list()]
    return fast.scatter(slow.arg_true(), pl.Series(parsed, dtype=pl.String)).alias("tenant")


def _parsed_tenant(value: bytes | str | None) -> str:
    """The tenant a payload names, parsed as JSON; UNROUTED when it names no valid one."""
    named = payload_tenant(value) if value is not None else None
    return named.tenant if named is not None and named.tenant is not None else UNROUTED
