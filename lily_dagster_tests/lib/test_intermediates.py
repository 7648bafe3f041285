"""The IO manager's intermediate frames at rest: each tenant's rows sealed with its own key,
so a frame of a multi-tenant run is shredded tenant by tenant; plain Parquet still reads."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

from lily_dagster.lib.crypto import CryptoError, TenantCipher, plaintext
from lily_dagster.lib.intermediates import MAGIC, SYSTEM, read_frame, write_frame
from lily_dagster_tests.support.sealed import files_holding, made_up_ciphers

MARKER = "IntermediateCanary3b"


def events(tenants: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "tenant": tenants,
            "description": [f"{MARKER} {i}" for i in range(len(tenants))],
            "owner_users": [[f"{MARKER}@{t}.org"] for t in tenants],
        }
    )


def test_a_tenants_frame_is_sealed_and_reads_back(tmp_path: Path) -> None:
    ciphers, frame = made_up_ciphers(), events(["acme"] * 3)
    write_frame(frame, tmp_path / "acme.parquet", ["acme"], ciphers)
    assert files_holding(tmp_path, MARKER) == []
    assert (tmp_path / "acme.parquet").read_bytes().startswith(MAGIC)
    assert read_frame(tmp_path / "acme.parquet", ciphers).equals(frame)
    only = read_frame(tmp_path / "acme.parquet", ciphers, columns=["tenant"])
    assert only.columns == ["tenant"]


def test_a_multi_tenant_frame_is_sealed_per_tenant(tmp_path: Path) -> None:
    """Each tenant's rows open with its key alone: destroying one tenant's key (what
    `tenant delete` does) makes its rows unreadable, whoever else shares the file."""
    keys = {"acme": os.urandom(32), "globex": os.urandom(32)}

    def ciphers(tenant: str) -> TenantCipher:
        return TenantCipher(tenant, keys[tenant])

    frame = events(["acme", "acme", "globex"])
    path = tmp_path / "acme...globex.parquet"
    write_frame(frame, path, ["acme", "globex"], ciphers)
    assert files_holding(tmp_path, MARKER) == []
    assert read_frame(path, ciphers).equals(frame)
    keys["acme"] = os.urandom(32)  # acme shredded; globex's key is still the one
    with pytest.raises(CryptoError, match="acme"):
        read_frame(path, ciphers)


def test_rows_of_no_tenant_use_the_system_key(tmp_path: Path) -> None:
    seen: list[str] = []
    made = made_up_ciphers()

    def ciphers(tenant: str) -> TenantCipher:
        seen.append(tenant)
        return made(tenant)

    frame = pl.DataFrame({"description": [MARKER]})
    write_frame(frame, tmp_path / "all.parquet", [], ciphers)
    assert seen == [SYSTEM] and files_holding(tmp_path, MARKER) == []
    assert read_frame(tmp_path / "all.parquet", ciphers).equals(frame)


def test_with_encryption_off_the_file_is_plain_parquet_and_old_files_read(tmp_path: Path) -> None:
    frame = events(["acme", "globex"])
    write_frame(frame, tmp_path / "off.parquet", ["acme", "globex"], plaintext)
    assert pl.read_parquet(tmp_path / "off.parquet").equals(frame)
    assert read_frame(tmp_path / "off.parquet", made_up_ciphers()).equals(frame)
