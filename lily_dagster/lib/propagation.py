"""Propagation: each target gets exactly the changes since its last delivery, at least once,
in change-log order.

Per (tenant, target) a position file records the last change delivered (or dead-lettered)
and the batch in flight: a batch is cut, recorded as in flight, then delivered; a crash or
an outage re-sends exactly that batch with the same Idempotency-Key, so a receiver that
dedupes by key sees each batch once. Before delivery: the target's access rules (changes
it may not receive are withheld, counted, and never sent) and its post-consume hooks (a row
a hook fails on goes to the dead-letter queue). A batch the target refuses (4xx) goes to
the target's dead-letter queue; one it cannot take now (5xx, timeout, refused) is retried
with backoff, and after `max_attempts` the run stops there for the next run to resume.

Positions and the change head are numbers and stay plaintext; a dead-letter queue holds
whole change rows and is sealed with the tenant's cipher, like the quarantine.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from lily_dagster.lib.crypto import Ciphers, ciphers_of, plaintext
from lily_dagster.lib.durable import write_text_atomic
from lily_dagster.lib.envelope import to_rejects
from lily_dagster.lib.gdpr.subject import Subject
from lily_dagster.lib.hooks import HookContext, build_chain, run_chain, tenant_chain
from lily_dagster.lib.hub.base import MetadataHub
from lily_dagster.lib.hub.changelog import CHANGE_SCHEMA
from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster.lib.targets import (
    DeliveryContext,
    TargetRejectedError,
    TargetUnavailableError,
    get_target,
)
from lily_dagster.settings import (
    AccessRules,
    ConfigError,
    LilyConfigFile,
    Settings,
    TargetConfig,
)

# Classifications a public destination never receives.
PERSONAL_DATA = ("PII", "PII:*", "GDPR:*")
TARGET_REJECTED = "target_rejected"
PAGE_BATCHES = 50


@dataclass
class Position:
    delivered: int = 0  # the last change delivered or dead-lettered
    in_flight: tuple[int, int] | None = None  # (first, last) of the batch being delivered

    @classmethod
    def load(cls, path: Path) -> Position:
        if not path.exists():
            return cls()
        data = json.loads(path.read_text())
        flight = data.get("in_flight")
        return cls(int(data["delivered"]), (int(flight[0]), int(flight[1])) if flight else None)

    def save(self, path: Path) -> None:
        write_text_atomic(
            path,
            json.dumps(
                {
                    "delivered": self.delivered,
                    "in_flight": list(self.in_flight) if self.in_flight else None,
                }
            ),
        )


@dataclass
class DispatchResult:
    target: str
    delivered: int = 0
    withheld: int = 0  # access rules kept them from this target
    dead_lettered: int = 0
    batches: int = 0
    attempts: int = 0
    position: int = 0
    error: str | None = None  # the target stayed unavailable: the next run resumes here
    delays_s: list[float] = field(default_factory=list)  # change → delivered, per change


@dataclass(frozen=True)
class ConfiguredTarget:
    config: TargetConfig
    settings: Any  # what the target's configure returned
    hooks: list[Any]  # post-consume chain (ConfiguredHook)

    @property
    def name(self) -> str:
        return self.config.name


def _configure(config: LilyConfigFile, tenant: str, target: TargetConfig) -> ConfiguredTarget:
    try:
        settings = get_target(target.type).configure(target)
        hooks = (
            build_chain(target.hooks, "post_consume")
            if target.hooks is not None
            else tenant_chain(config, tenant, "post_consume")
        )
    except ConfigError as exc:
        raise ConfigError(f"target {target.name!r}: {exc}") from None
    return ConfiguredTarget(target, settings, hooks)


def configure_targets(config: LilyConfigFile, tenant: str) -> list[ConfiguredTarget]:
    """The tenant's targets, configured; a bad target fails here with its name."""
    return [_configure(config, tenant, t) for t in config.targets_of(tenant)]


def configure_target(config: LilyConfigFile, tenant: str, name: str) -> ConfiguredTarget:
    """One target of the tenant, configured (the others are left alone); ConfigError naming
    the known ones when the tenant has no target of that name."""
    targets = config.targets_of(tenant)
    for target in targets:
        if target.name == name:
            return _configure(config, tenant, target)
    known = [t.name for t in targets]
    raise ConfigError(f"no target {name!r} for tenant {tenant}; known: {known}")


def check_target_config(config: LilyConfigFile) -> None:
    """Every target of every tenant configures (at definitions load): unknown types, bad
    options, unset secrets and bad hook chains fail before any run."""
    for target in config.targets:
        unknown = [t for t in target.tenants or [] if config.tenant(t) is None]
        if unknown and config.tenants:
            raise ConfigError(f"target {target.name!r}: unknown tenants {unknown}")
    tenants = [t.name for t in config.tenants] or ["__any__"]
    for tenant in tenants:
        configure_targets(config, tenant)


def allowed(changes: pl.DataFrame, rules: AccessRules) -> pl.Series:
    """Which changes the target may receive."""
    deny = list(rules.deny_classifications) + (list(PERSONAL_DATA) if rules.public else [])

    def matches(patterns: list[str]) -> Callable[[str], bool]:
        return lambda value: any(fnmatch.fnmatchcase(value, p) for p in patterns)

    ok = pl.repeat(True, pl.len())
    if deny:
        hit = matches(deny)
        tags = changes.get_column("classifications").to_list()
        ok = ok & pl.Series([not any(hit(t) for t in (ts or [])) for ts in tags])
    if rules.allow_types:
        ok = ok & pl.col("type_name").map_elements(matches(rules.allow_types), pl.Boolean)
    if rules.deny_types:
        ok = ok & ~pl.col("type_name").map_elements(matches(rules.deny_types), pl.Boolean)
    return (
        changes.select(ok.alias("ok")).get_column("ok")
        if changes.height
        else pl.Series([], dtype=pl.Boolean)
    )


def position_path(root: Path, tenant: str, target: str) -> Path:
    """Where a target's delivery position for a tenant is kept."""
    return root / tenant / f"{target}.json"


def change_head_path(root: Path, tenant: str) -> Path:
    """Where the tenant's change-log head is noted as its batches are applied (no target is
    named `_…`, so it cannot be a target's position file)."""
    return root / tenant / "_change_head.json"


def read_change_head(root: Path, tenant: str) -> int:
    path = change_head_path(root, tenant)
    return int(json.loads(path.read_text())["change_seq"]) if path.exists() else 0


def record_change_head(root: Path, tenant: str, change_seq: int) -> None:
    """Note the change log's head before the batches that moved it are marked applied: a run
    killed after that mark and before its materialisation (which also carries the head)
    must not leave changes the propagation sensor never hears of. Runs of one tenant are
    serialised, so the head only grows."""
    if change_seq > read_change_head(root, tenant):
        path = change_head_path(root, tenant)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps({"change_seq": change_seq}))


def dead_letter_queues(dlq_root: Path, ciphers: Ciphers = plaintext) -> dict[str, QuarantineStore]:
    """Every target's dead-letter queue under `dlq_root`, by target name."""
    if not dlq_root.is_dir():
        return {}
    return {
        d.name: QuarantineStore(d, ciphers)
        for d in sorted(dlq_root.iterdir())
        if d.is_dir() and not d.name.startswith(".")
    }


def idempotency_key(tenant: str, target: str, first: int, last: int) -> str:
    return hashlib.sha256(f"lily|{tenant}|{target}|{first}|{last}".encode()).hexdigest()[:32]


class Propagator:
    """Delivers one tenant's changes to its targets; state under `root` (positions) and
    `dlq_root` (a QuarantineStore per target, sealed with `ciphers`)."""

    def __init__(
        self,
        hub: MetadataHub,
        root: Path,
        dlq_root: Path,
        sleep: Callable[[float], None] = time.sleep,
        ciphers: Ciphers = plaintext,
    ) -> None:
        self.hub = hub
        self.root = root
        self.dlq_root = dlq_root
        self.sleep = sleep
        self.ciphers = ciphers

    @classmethod
    def from_settings(cls, settings: Settings, hub: MetadataHub) -> Propagator:
        """The propagator of the state under $LILY_HOME, its dead letters sealed."""
        return cls(hub, settings.propagation_dir, settings.dlq_dir, ciphers=ciphers_of(settings))

    def position_path(self, tenant: str, target: str) -> Path:
        return position_path(self.root, tenant, target)

    def position(self, tenant: str, target: str) -> Position:
        return Position.load(self.position_path(tenant, target))

    def dlq(self, target: str) -> QuarantineStore:
        return QuarantineStore(self.dlq_root / target, self.ciphers)

    def backlog(self, tenant: str, target: str) -> tuple[int, int]:
        """(the tenant's changes not yet delivered to `target`, its dead letters there): the
        propagation gauges, recorded after every delivery and replay."""
        behind = max(0, self.hub.last_change(tenant) - self.position(tenant, target).delivered)
        return behind, self.dlq(target).read(tenant).height

    def erase_subject(self, tenant: str, subject: Subject, dry_run: bool = False) -> int:
        """Erase `subject` from the tenant's dead letters of every target; how many
        dead-lettered changes mentioned it (see QuarantineStore.erase_subject)."""
        queues = dead_letter_queues(self.dlq_root, self.ciphers).values()
        return sum(q.erase_subject(tenant, subject, dry_run) for q in queues)

    def dispatch(
        self, tenant: str, target: ConfiguredTarget, max_batches: int = 1000
    ) -> DispatchResult:
        result = DispatchResult(target.name)
        path = self.position_path(tenant, target.name)
        pos = Position.load(path)
        size = target.config.batch_size
        page = pl.DataFrame(schema=CHANGE_SCHEMA)  # read ahead: one hub read per many batches
        for _ in range(max_batches):
            if pos.in_flight:
                first, last = pos.in_flight
                batch = self.hub.changes(tenant, first - 1, last - first + 1)
            else:
                if page.is_empty():
                    page = self.hub.changes(tenant, pos.delivered, size * PAGE_BATCHES)
                batch, page = page.head(size), page.slice(size)
                if batch.is_empty():
                    break
                first, last = int(batch["seq"][0]), int(batch["seq"][-1])
                pos.in_flight = (first, last)
                pos.save(path)  # from here on, this exact batch is what gets (re)sent
            ok = self._deliver(
                tenant, target, batch, idempotency_key(tenant, target.name, first, last), result
            )
            if not ok:
                break
            pos = Position(delivered=last, in_flight=None)
            pos.save(path)
            result.batches += 1
        result.position = pos.delivered
        return result

    def _deliver(
        self,
        tenant: str,
        target: ConfiguredTarget,
        batch: pl.DataFrame,
        key: str,
        result: DispatchResult,
    ) -> bool:
        """Deliver one batch (what the rules and hooks let through); False when the target
        stayed unavailable."""
        mask = allowed(batch, target.config.access)
        result.withheld += int((~mask).sum())
        sendable = batch.filter(mask)
        dead: list[pl.DataFrame] = []
        if sendable.height and target.hooks:
            chained = run_chain(sendable, target.hooks, HookContext(tenant=tenant))
            failed = chained.rejects.select("event_id", "reason", "detail")
            sendable = chained.events
            if failed.height:
                dead.append(_dead(batch.join(failed, on="event_id"), tenant))
        if sendable.height:
            ctx = DeliveryContext(tenant, target.name, key, target.config.timeout_s)
            error = ""
            for attempt in range(target.config.max_attempts):
                result.attempts += 1
                try:
                    get_target(target.config.type).deliver(sendable, target.settings, ctx)
                except TargetUnavailableError as exc:
                    error = str(exc)
                    if attempt + 1 < target.config.max_attempts:
                        self.sleep(target.config.backoff_s * (2**attempt))
                    continue
                except TargetRejectedError as exc:
                    dead.append(_dead(_why(sendable, f"{target.name}: {exc}"), tenant))
                    break
                now = datetime.now(UTC)
                result.delivered += sendable.height
                result.delays_s += [
                    (now - t).total_seconds() for t in sendable.get_column("changed_at").to_list()
                ]
                break
            else:
                tries = target.config.max_attempts
                result.error = f"{target.name} unavailable after {tries} attempts: {error}"
                return False
        for frame in dead:
            result.dead_lettered += self.dlq(target.name).add(tenant, f"batch-{key}", frame)
        return True

    def replay_dlq(self, tenant: str, target: ConfiguredTarget) -> DispatchResult:
        """Send the target's dead-lettered changes again (as they were); those it takes
        leave the queue, the others come back with their new reason."""
        store = self.dlq(target.name)
        entries = store.read(tenant)
        result = DispatchResult(target.name)
        if entries.is_empty():
            return result
        rows = [json.loads(r) for r in entries.get_column("raw").to_list()]
        batch = (
            pl.DataFrame(rows)
            .with_columns(pl.col("changed_at").str.to_datetime(time_zone="UTC"))
            .cast(CHANGE_SCHEMA)  # type: ignore[arg-type]
            .sort("seq")
        )
        store.mark_replayed(
            tenant,
            f"replay-{int(time.time() * 1000)}",
            entries.get_column("quarantine_id").to_list(),
            datetime.now(UTC),
        )
        key = "dlq-" + idempotency_key(
            tenant, target.name, int(batch["seq"][0]), int(batch["seq"][-1])
        )
        if not self._deliver(tenant, target, batch, key, result):
            # Still unavailable: back into the queue, unchanged.
            store.add(tenant, f"replay-{key}", _dead(_why(batch, result.error or ""), tenant))
        return result


def _why(changes: pl.DataFrame, detail: str) -> pl.DataFrame:
    return changes.with_columns(
        pl.lit(TARGET_REJECTED).alias("reason"), pl.lit(detail).alias("detail")
    )


def _dead(changes: pl.DataFrame, tenant: str) -> pl.DataFrame:
    """Dead-letter entries for change rows with `reason` and `detail` columns: the whole
    change row as raw, so a replay can rebuild it."""
    rows = changes.select(list(CHANGE_SCHEMA)).iter_rows(named=True)
    raw = [
        json.dumps(
            {**row, "changed_at": row["changed_at"].isoformat()},
            ensure_ascii=False,
            allow_nan=False,
        )
        for row in rows
    ]
    return to_rejects(
        changes.select(
            "event_id", "reason", "detail", pl.Series("raw", raw, dtype=pl.String), "origin"
        ),
        tenant,
    )
