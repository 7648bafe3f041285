"""A backfill of a multi-tenant source (`lily backfill` without `--tenant`): one pass over the
files, each batch's rows grouped by the tenant their envelope names (backfill_routing), each
group through that tenant's gates, pre-ingest hooks, hub and quarantine as a single-tenant load
of the tenant's own rows would take it.

Resumable per tenant: each tenant's upsert records the row of the source its batch ends at
(the single-tenant load's checkpoint key, shards 1), so a rerun skips, tenant by tenant, what
was committed, and `<key>:done` marks the tenant's load whole. Rows naming no valid tenant go
to the `_unrouted` quarantine with the decoder's reason, as unroutable Kafka messages do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from lily_dagster.lib.backfill import (
    BackfillReport,
    check_coverage,
    checkpoint_key,
    shard_progress,
    shards_left,
)
from lily_dagster.lib.backfill_routing import UNROUTED, tenant_column
from lily_dagster.lib.decode import decode_frame, fill_raw, is_payloads, scan_envelopes
from lily_dagster.lib.decode.tenant import origin_series
from lily_dagster.lib.envelope import DecodeResult, empty_events
from lily_dagster.lib.hooks import HookContext, run_chain, tenant_chain
from lily_dagster.lib.hub.base import MetadataHub
from lily_dagster.lib.metrics import MetricsStore
from lily_dagster.lib.metrics.updates import applied, stages
from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster.lib.validation import all_rules, split_valid
from lily_dagster.settings import UNROUTED_TENANT, LilyConfigFile

_TENANT, _ORIGIN = "__lily_tenant", "__lily_origin"


@dataclass
class RoutedReport:
    source: str
    tenants: dict[str, BackfillReport] = field(default_factory=dict)
    rows_read: int = 0
    unrouted: int = 0  # rows naming no valid tenant, quarantined under _unrouted
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        reports = self.tenants.values()
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "applied": sum(r.applied for r in reports),
            "quarantined": sum(r.quarantined for r in reports) + self.unrouted,
            "unrouted": self.unrouted,
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.rows_read / self.seconds) if self.seconds else 0,
            "tenants": {t: r.as_dict() for t, r in sorted(self.tenants.items())},
        }


@dataclass
class _Batch:
    """One batch's rows of one tenant, where they are in the source, and their origins."""

    frame: pl.DataFrame
    origins: pl.Series
    start: int
    end: int


class RoutedLoad:
    """The state of one multi-tenant load: each tenant's report and committed row."""

    def __init__(
        self,
        hub: MetadataHub,
        quarantine: QuarantineStore,
        config: LilyConfigFile,
        source: str,
        max_event_bytes: int,
        metrics: MetricsStore | None = None,
    ) -> None:
        self.hub, self.quarantine, self.config = hub, quarantine, config
        self.metrics = metrics
        self.source, self.max_event_bytes = source, max_event_bytes
        self.key = checkpoint_key(source, 1, 0)
        self.stem = self.key.replace(":", "-")
        self.report = RoutedReport(source)
        self.committed: dict[str, int] = {}

    def tenant_report(self, tenant: str) -> BackfillReport:
        if tenant not in self.report.tenants:
            check_coverage(self.hub, tenant, self.source, 1)
            done = self.hub.checkpoint(tenant, self.key) or 0
            self.committed[tenant] = done
            self.report.tenants[tenant] = BackfillReport(
                tenant, self.source, 0, 1, resumed_at_row=done
            )
        return self.report.tenants[tenant]

    def load_batch(self, frame: pl.DataFrame, origin: str, start: int) -> None:
        end = start + frame.height
        payloads = is_payloads(frame)
        own = payloads and "origin" in frame.columns
        origins = frame.get_column("origin") if own else origin_series(origin, frame.height)
        tagged = frame.with_columns(
            tenant_column(frame, payloads).alias(_TENANT), origins.cast(pl.String).alias(_ORIGIN)
        )
        for (tenant,), rows in tagged.group_by(_TENANT, maintain_order=True):
            batch = _Batch(rows.drop(_TENANT, _ORIGIN), rows.get_column(_ORIGIN), start, end)
            if tenant == UNROUTED:
                self.unrouted(batch)
            else:
                self.tenant_batch(str(tenant), batch)

    def unrouted(self, batch: _Batch) -> None:
        """Rows naming no valid tenant: each gets the decoder's reason (missing_field,
        wrong_type, bad_tenant, malformed_json) in the _unrouted quarantine."""
        self.report.unrouted += batch.frame.height
        decoded = self.decoded(None, batch)
        self.quarantine_rejects(UNROUTED_TENANT, [decoded.rejects], batch)
        # Routing reads `tenant` as the decoder does, so no row of these decodes; were one
        # to, it would still reach the tenant it names rather than be lost.
        no_rejects = decoded.rejects.clear()
        for (tenant,), events in decoded.events.group_by("tenant"):
            self.apply(str(tenant), events, DecodeResult(events, no_rejects), batch)

    def tenant_batch(self, tenant: str, batch: _Batch) -> None:
        report = self.tenant_report(tenant)
        report.rows_read += batch.frame.height
        if batch.end <= self.committed[tenant]:
            return  # committed by an earlier run
        decoded = self.decoded(tenant, batch)
        self.apply(tenant, decoded.events, decoded, batch)

    def decoded(self, tenant: str | None, batch: _Batch) -> DecodeResult:
        return decode_frame(batch.frame, tenant, batch.origins, self.max_event_bytes, lazy_raw=True)

    def apply(
        self, tenant: str, events: pl.DataFrame, decoded: DecodeResult, batch: _Batch
    ) -> None:
        """A tenant's decoded rows through its rules, hooks and hub, as run_backfill does."""
        report = self.tenant_report(tenant)
        report.rows_in_shard += events.height
        checked = split_valid(events, all_rules(expected_tenant=tenant), tenant)

        def lookup(names: list[str]) -> set[str]:
            return self.hub.contains(tenant, names)

        chain = tenant_chain(self.config, tenant, "pre_ingest")
        chained = run_chain(checked.valid, chain, HookContext(tenant=tenant, hub_lookup=lookup))
        rejects = [decoded.rejects, checked.rejects, chained.rejects]
        report.quarantined += self.quarantine_rejects(tenant, rejects, batch)
        result = self.hub.upsert(tenant, chained.events, checkpoint=(self.key, batch.end))
        refused = 0
        if result.rejects is not None and result.rejects.height:
            refused = self.quarantine.add(tenant, f"{self.stem}-hub-{batch.end}", result.rejects)
            report.quarantined += refused
        if self.metrics is not None and result.state is not None:
            arrived = events.height + decoded.rejects.height
            taken = stages(tenant, landed=arrived, valid=checked.valid.height).merge(
                applied(tenant, chained.events.height - refused, result.state.status_counts)
            )
            self.metrics.try_record(taken, key=f"backfill:{tenant}:{self.key}:{batch.end}")
        self.committed[tenant] = batch.end
        report.record(chained.events.height, result)

    def quarantine_rejects(self, tenant: str, parts: list[pl.DataFrame], batch: _Batch) -> int:
        found = [p for p in parts if p.height]
        if not found:
            return 0
        kept = fill_raw(pl.concat(found), batch.frame, batch.origins, self.max_event_bytes)
        return self.quarantine.add(tenant, f"{self.stem}-{batch.start}", kept)

    def finish(self) -> None:
        """Every tenant's load is whole: the source is read to its end."""
        for tenant, report in self.report.tenants.items():
            self.hub.upsert(
                tenant, empty_events(), checkpoint=(f"{self.key}:done", self.report.rows_read)
            )
            report.shards_left = shards_left(shard_progress(self.hub, tenant, self.source), 1)


def run_routed_backfill(
    hub: MetadataHub,
    quarantine: QuarantineStore,
    config: LilyConfigFile,
    source: str,
    *,
    batch_rows: int = 500_000,
    max_event_bytes: int = 1 << 20,
    progress: Callable[[RoutedReport], None] | None = None,
    metrics: MetricsStore | None = None,
) -> RoutedReport:
    """Load a multi-tenant `source`: each row into the hub of the tenant it names."""
    started = time.perf_counter()
    load = RoutedLoad(hub, quarantine, config, source, max_event_bytes, metrics)
    for frame, origin in scan_envelopes(source, batch_rows):
        load.load_batch(frame, origin, load.report.rows_read)
        load.report.rows_read += frame.height
        load.report.seconds = time.perf_counter() - started
        if progress is not None:
            progress(load.report)
    load.finish()
    load.report.seconds = time.perf_counter() - started
    for report in load.report.tenants.values():
        report.seconds = load.report.seconds
    return load.report
