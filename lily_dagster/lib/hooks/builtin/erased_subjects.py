"""erased-subjects: events naming a data subject erased by `lily gdpr erase` are masked
before they reach the hub (docs/gdpr.md). First in the default pre-ingest chain."""

from __future__ import annotations

import polars as pl

from lily_dagster.lib.crypto import ciphers_of
from lily_dagster.lib.gdpr.erased import GDPR_DIR, ErasedSubjects
from lily_dagster.lib.gdpr.mask import find_erased, mask_events
from lily_dagster.lib.hooks import HookContext, register_hook
from lily_dagster.settings import Settings


@register_hook("erased-subjects")
class ErasedSubjectsHook:
    """Owners equal to a subject erased from the tenant dropped, its occurrences in
    descriptions, attributes (sample values), partial changes and raw payloads replaced by
    `[erased]`. Subjects are found by hashing the events' tokens against the tenant's
    erased-subjects list (salted hashes): a subject of several words is not found. A tenant
    that never erased anyone costs one file lookup per batch."""

    name = "erased-subjects"
    stage = "pre_ingest"

    def apply(self, events: pl.DataFrame, config: None, ctx: HookContext) -> pl.DataFrame:
        settings = Settings.from_env()
        root = settings.home / GDPR_DIR
        if not (root / f"{ctx.tenant}.json").exists():
            return events  # the fast path: nobody of this tenant was ever erased
        erased = ErasedSubjects(root, ciphers_of(settings)).load(ctx.tenant)
        if erased is None:
            return events
        return mask_events(events, find_erased(events, erased))
