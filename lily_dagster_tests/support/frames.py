"""Envelopes as the pipeline hands them to the hub (`envelopes` builds them)."""

from __future__ import annotations

import json
from typing import Any

import polars as pl

from lily_dagster.lib.enrichment import normalise_owners
from lily_dagster.lib.envelope import decode_envelopes


def frame(envelopes: list[dict[str, Any]]) -> pl.DataFrame:
    """Envelopes as the pipeline hands them to the hub: decoded, then owners normalised."""
    result = decode_envelopes(
        [json.dumps(e) for e in envelopes],
        [f"test:{i}" for i in range(len(envelopes))],
        tenant=None,
        max_event_bytes=1 << 20,
    )
    assert result.rejects.is_empty(), result.rejects.to_dicts()
    return normalise_owners(result.events)
