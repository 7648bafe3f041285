"""Erasing a data subject from every store of a tenant (CONTRACT.md §7, `lily gdpr erase`,
`gdpr_erasure_job`): the hub and its change log, staging, the webhook inbox, the
quarantine, every target's dead-letter queue and the IO manager's intermediate files.

The subject goes on the tenant's erased-subjects list first, so that an event naming it
that is ingested while the stores are erased, or later, is masked by the `erased-subjects`
hook. Each store's eraser is idempotent and atomic; the request file (requests.py) says
which stores a run finished, and running the erasure again completes an interrupted one.
The audit log records the request (its id and the subject's salted hash), never the
subject. `deliver_changes` then sends the records the hub rewrote to the targets.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lily_dagster.lib.access.decision import Action
from lily_dagster.lib.audit import operator_action
from lily_dagster.lib.crypto import ciphers_of
from lily_dagster.lib.gdpr.erased import GDPR_DIR, ErasedSubjects
from lily_dagster.lib.gdpr.intermediates import erase_intermediates
from lily_dagster.lib.gdpr.requests import ErasureRequests
from lily_dagster.lib.gdpr.subject import Subject
from lily_dagster.lib.hub import open_hub
from lily_dagster.lib.hub.base import HubErasure, MetadataHub
from lily_dagster.lib.propagation import (
    DispatchResult,
    Propagator,
    configure_targets,
    record_change_head,
)
from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster.lib.staging import StagingArea
from lily_dagster.settings import ConfigError, Settings, validate_tenant

# The stores of the summary, in the order they are erased.
STORES = (
    "hub",
    "change_log",
    "pending_patches",
    "staging",
    "inbox",
    "quarantine",
    "dead_letters",
    "intermediates",
)


@dataclass
class ErasureSummary:
    """What an erasure did (dry run: would do). `records` are the qualified names of the
    hub records rewritten; `stores` how many items each store rewrote."""

    tenant: str
    request_id: str
    subject_hash: str
    dry_run: bool = False
    records: list[str] = field(default_factory=list)
    stores: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STORES, 0))
    resumed: bool = False  # this run completed a request an earlier run left unfinished

    def as_dict(self) -> dict[str, Any]:
        """The JSON summary `lily gdpr erase` prints (no subject in it)."""
        out: dict[str, Any] = {
            "tenant": self.tenant,
            "request": self.request_id,
            "records_changed": len(self.records),
            "stores": dict(self.stores),
        }
        if self.resumed:
            out["resumed"] = True
        if self.dry_run:
            out["dry_run"] = True
        return out


def erase_subject(
    settings: Settings,
    tenant: str,
    subject: str | Subject,
    dry_run: bool = False,
    *,
    purge: bool = False,
    sub: str | None = None,
    via: str = "",
) -> ErasureSummary:
    """Erase `subject` from every store of `tenant` (dry_run: count only, change nothing).
    `purge`: with LILY_HUB=atlan, purge and recreate each changed asset (its audit history
    goes with it). `sub`: who asks (the CLI's user unless given); `via`: appended to the
    audit resource (`@run:<id>` for a Dagster run)."""
    validate_tenant(tenant)
    subject = subject if isinstance(subject, Subject) else Subject(subject)
    if purge and settings.hub != "atlan":
        raise ConfigError("purge applies to LILY_HUB=atlan only (the local hub keeps no history)")
    root = settings.home / GDPR_DIR
    erased = ErasedSubjects(root, ciphers_of(settings))
    digest = erased.digest(tenant, subject)
    if dry_run:
        summary = ErasureSummary(tenant, f"dry-run-{secrets.token_hex(4)}", digest, dry_run=True)
        with operator_action(settings, tenant, Action.GDPR_ERASE, _resource(summary, via), sub):
            _erase_stores(settings, subject, summary, purge, lambda store, n: None)
        return summary
    requests = ErasureRequests(root)
    request = requests.begin(tenant, digest)
    summary = ErasureSummary(tenant, request.id, digest, resumed=bool(request.runs))
    requests.start_run(request)
    with operator_action(settings, tenant, Action.GDPR_ERASE, _resource(summary, via), sub):
        erased.add(tenant, subject)  # first: what is ingested from now on is masked
        _erase_stores(
            settings, subject, summary, purge, lambda s, n: requests.record(request, s, n)
        )
    requests.finish(request)
    return summary


def _resource(summary: ErasureSummary, via: str) -> str:
    """The audit log's resource: the request and the subject's salted hash."""
    kind = "erase-dry-run" if summary.dry_run else "erase"
    return f"gdpr/{kind}/{summary.request_id}@subject:{summary.subject_hash[:16]}{via}"


def _erase_stores(
    settings: Settings,
    subject: Subject,
    summary: ErasureSummary,
    purge: bool,
    done: Callable[[str, int], None],
) -> None:
    """Run every store's eraser in turn, noting each as it finishes."""
    tenant, dry_run = summary.tenant, summary.dry_run
    hub_store = open_hub(settings)
    hub = _erase_hub(hub_store, tenant, subject, dry_run, purge)
    summary.records = list(hub.records_changed)
    counts = {
        "hub": len(hub.records_changed),
        "change_log": hub.changes_scrubbed,
        "pending_patches": hub.patches_scrubbed,
    }
    for store, count in counts.items():
        summary.stores[store] = count
        done(store, count)
    erasers: dict[str, Callable[[], int]] = {
        "staging": lambda: StagingArea.from_settings(settings).erase_subject(
            tenant, subject, dry_run
        ),
        "inbox": lambda: _erase_inbox(settings, tenant, subject, dry_run),
        "quarantine": lambda: QuarantineStore.from_settings(settings).erase_subject(
            tenant, subject, dry_run
        ),
        "dead_letters": lambda: Propagator.from_settings(settings, hub_store).erase_subject(
            tenant, subject, dry_run
        ),
        "intermediates": lambda: erase_intermediates(
            settings.io_dir, ciphers_of(settings), tenant, subject, dry_run
        ),
    }
    for store, erase in erasers.items():
        summary.stores[store] = erase()
        done(store, summary.stores[store])


def _erase_hub(
    hub: MetadataHub, tenant: str, subject: Subject, dry_run: bool, purge: bool
) -> HubErasure:
    if not purge:
        return hub.erase_subject(tenant, subject, dry_run)
    from lily_dagster.lib.hub.atlan.hub import AtlanHub

    if not isinstance(hub, AtlanHub):
        raise ConfigError("purge applies to LILY_HUB=atlan only")
    return hub.erase_subject(tenant, subject, dry_run, purge=True)


def _erase_inbox(settings: Settings, tenant: str, subject: Subject, dry_run: bool) -> int:
    from lily_dagster.lib.inbox import existing_inbox

    with existing_inbox(settings) as inbox:
        return 0 if inbox is None else inbox.erase_subject(tenant, subject, dry_run)


def deliver_changes(settings: Settings, tenant: str) -> dict[str, DispatchResult]:
    """Send the tenant's undelivered changes (the erasure's `updated` ones among them) to
    each of its targets, as the propagation asset does; by target. The change log's head
    is noted first, so that the propagation sensor sends what a target did not take now."""
    hub = open_hub(settings)
    record_change_head(settings.propagation_dir, tenant, hub.last_change(tenant))
    propagator = Propagator.from_settings(settings, hub)
    return {
        target.name: propagator.dispatch(tenant, target)
        for target in configure_targets(settings.config, tenant)
    }


def delivery_summary(results: dict[str, DispatchResult]) -> dict[str, dict[str, Any]]:
    """Per target: changes delivered, dead-lettered, withheld, and the error if it stayed
    unavailable (the propagation sensor retries then)."""
    return {
        name: {
            "delivered": r.delivered,
            "dead_lettered": r.dead_lettered,
            "withheld_by_access_rules": r.withheld,
            "error": r.error,
        }
        for name, r in results.items()
    }


def unfinished_requests(settings: Settings, tenant: str) -> list[str]:
    """The ids of the tenant's erasure requests that an interrupted run left unfinished."""
    return [r.id for r in ErasureRequests(settings.home / GDPR_DIR).unfinished(tenant)]


__all__ = [
    "STORES",
    "ErasureSummary",
    "deliver_changes",
    "delivery_summary",
    "erase_subject",
    "unfinished_requests",
]
