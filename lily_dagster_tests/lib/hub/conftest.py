"""Hub stores with tenant keys: a key ring under a test LILY_HOME, hubs sealing with it (or
not), and what a file under a hub directory holds byte for byte."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pytest

from lily_dagster.lib.crypto import Ciphers, ciphers_of
from lily_dagster.lib.hub.local import LocalHub
from lily_dagster.settings import Settings
from lily_dagster_tests.support.envelopes import at, envelope


def ciphers_in(home: Path, encryption: bool = True) -> Ciphers:
    """The tenant ciphers of a LILY_HOME (LILY_ENCRYPTION on or off), as production's."""
    env = {"LILY_HOME": str(home), "LILY_ENCRYPTION": "on" if encryption else "off"}
    return ciphers_of(Settings.resolve(env))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "lily"


@pytest.fixture
def sealed(home: Path) -> Ciphers:
    return ciphers_in(home)


class WalKeepingHub(LocalHub):
    """A LocalHub whose writes stay in DuckDB's write-ahead log (no checkpoint when a
    connection closes), so that a test can read what the WAL holds."""

    @contextmanager
    def _connect(self, tenant: str, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        with super()._connect(tenant, read_only) as con:
            if not read_only:
                con.execute("PRAGMA disable_checkpoint_on_shutdown")
            yield con


def files_holding(root: Path, *needles: str) -> dict[str, list[str]]:
    """Each file under `root` whose raw bytes hold one of `needles` (any case) → them."""
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes().lower()
        hits = [n for n in needles if n.lower().encode() in data]
        if hits:
            found[str(path.relative_to(root))] = hits
    return found


def patch_envelope(
    event_id: str, qualified_name: str, minutes: float, lily_patch: dict[str, Any]
) -> dict[str, Any]:
    """A partial change (a chat command's), as `frame` takes it."""
    return envelope(
        qualified_name,
        event_id=event_id,
        source="slack",
        event_time=at(minutes),
        type_name="Asset",
        attributes={"lily_patch": lily_patch},
    )


def dumps(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)
