"""Off-boarding a tenant (CONTRACT.md §7, `lily tenant delete`): its data key is destroyed
first (crypto-shredding: any copy of its files left anywhere can no longer be opened), then
its files and inbox events, then its Dagster partition. Other tenants are untouched; the
deletion is recorded in the global audit log (the tenant's own log goes with it)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lily_dagster.lib.crypto import keyring
from lily_dagster.lib.metrics import MetricsStore
from lily_dagster.settings import Settings


@dataclass
class TenantDeletion:
    tenant: str
    key_destroyed: bool = False
    removed: dict[str, int] = field(default_factory=dict)  # store → files or events removed
    partition_removed: bool = False
    still_configured: bool = False  # named in LILY_CONFIG: events for it would recreate it

    def as_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "key_destroyed": self.key_destroyed,
            "removed": self.removed,
            "partition_removed": self.partition_removed,
            "still_configured": self.still_configured,
        }


def tenant_paths(settings: Settings, tenant: str) -> dict[str, list[Path]]:
    """Every file or folder under $LILY_HOME that belongs to `tenant` alone, by store."""
    home = settings.home
    return {
        "hub": _matching(settings.hub_dir, tenant, ".duckdb"),
        "atlan_ledger": _matching(home / "atlan-ledger", tenant, ".duckdb"),
        "staging": _existing([settings.staging_dir / tenant]),
        "quarantine": _existing([settings.quarantine_dir / tenant]),
        "dead_letters": _existing(list(_children(settings.dlq_dir, tenant))),
        "propagation": _existing([settings.propagation_dir / tenant]),
        "intermediates": _existing(list(settings.io_dir.rglob(f"{tenant}.parquet")))
        if settings.io_dir.is_dir()
        else [],
        "gdpr": _existing([home / "gdpr" / f"{tenant}.json", home / "gdpr" / tenant]),
        "audit": _existing([settings.audit_dir / f"{tenant}.jsonl"]),
    }


def delete_tenant(settings: Settings, tenant: str) -> TenantDeletion:
    """Delete `tenant`'s key, then its files and inbox events (the caller removes its
    Dagster partition: `partition_removed`)."""
    result = TenantDeletion(tenant)
    result.key_destroyed = keyring(settings).destroy(tenant)
    for store, paths in tenant_paths(settings, tenant).items():
        for path in paths:
            _remove(path)
        result.removed[store] = len(paths)
    result.removed["inbox"] = _forget_inbox_events(settings, tenant)
    MetricsStore.from_settings(settings).forget_tenant(tenant)  # its series: counts only
    result.still_configured = any(t.name == tenant for t in settings.config.tenants)
    return result


def _forget_inbox_events(settings: Settings, tenant: str) -> int:
    from lily_dagster.lib.inbox import existing_inbox

    with existing_inbox(settings) as inbox:
        return 0 if inbox is None else inbox.forget_tenant(tenant)


def _matching(folder: Path, tenant: str, suffix: str) -> list[Path]:
    """The tenant's database and DuckDB's files beside it: its write-ahead log, its spill
    folder, and the copy an interrupted erasure's rewrite may have left."""
    name = f"{tenant}{suffix}"
    return _existing(
        [folder / name, folder / f"{name}.wal", folder / f"{name}.tmp", folder / f".{name}.compact"]
    )


def _children(folder: Path, tenant: str) -> Iterator[Path]:
    if folder.is_dir():
        for target in folder.iterdir():
            yield target / tenant


def _existing(paths: list[Path]) -> list[Path]:
    return [p for p in paths if p.exists()]


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


__all__ = ["TenantDeletion", "delete_tenant", "tenant_paths"]
