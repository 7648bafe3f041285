"""Tenant ciphers for tests: those of a Lily home (to read what the pipeline, the receiver
or a CLI wrote there, sealed with the keys under `<home>/keys`), or keys made up for a
store under test; and a search of a folder's raw bytes for what must not be there."""

from __future__ import annotations

import os
from pathlib import Path

from lily_dagster.lib.crypto import Ciphers, TenantCipher, ciphers_of
from lily_dagster.settings import Settings


def ciphers_at(home: Path) -> Ciphers:
    """What the stores under `home` were sealed with (the environment's key settings)."""
    return ciphers_of(Settings.from_env().model_copy(update={"home": home}))


def made_up_ciphers() -> Ciphers:
    """A data key per tenant, made on first use and kept in memory."""
    keys: dict[str, bytes] = {}

    def cipher(tenant: str) -> TenantCipher:
        return TenantCipher(tenant, keys.setdefault(tenant, os.urandom(32)))

    return cipher


def files_holding(root: Path, *markers: str) -> list[str]:
    """Every file under `root` whose bytes hold one of `markers` (as UTF-8), by path."""
    wanted = [m.encode("utf-8") for m in markers]
    return sorted(
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and any(m in path.read_bytes() for m in wanted)
    )
