"""The tenant cipher: what it seals opens to the same values, sealed data shows none of
them, data written before encryption still reads, and a wrong key fails loudly."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lily_dagster.lib.crypto import FILE_MAGIC, VALUE_PREFIX, CryptoError, TenantCipher

KEY = bytes(range(32))
MARKER = "Marker9d2e"


def cipher(key: bytes = KEY, sealing: bool = True) -> TenantCipher:
    return TenantCipher("acme", key, sealing=sealing)


@settings(max_examples=200, deadline=None)
@given(
    texts=st.lists(st.one_of(st.none(), st.text()), max_size=20),
    lists=st.lists(st.one_of(st.none(), st.lists(st.text(), max_size=4)), max_size=20),
)
def test_columns_open_to_what_was_sealed(
    texts: list[str | None], lists: list[list[str] | None]
) -> None:
    frame = pl.DataFrame(
        {"description": texts, "owner_users": (lists + [None] * len(texts))[: len(texts)]},
        schema={"description": pl.String, "owner_users": pl.List(pl.String)},
    )
    sealed = cipher().seal_frame(frame, ["description", "owner_users"])
    assert sealed.schema == frame.schema
    assert cipher().open_frame(sealed, ["description", "owner_users"]).equals(frame)


def test_sealed_columns_hide_every_value_and_keep_nulls_and_empty_lists() -> None:
    frame = pl.DataFrame(
        {
            "description": [f"{MARKER} one", None, ""],
            "owner_users": [[MARKER, "b"], [], None],
            "qualified_name": [f"db/{MARKER}", "b", "c"],  # not content: stays as it is
        }
    )
    sealed = cipher().seal_frame(frame, ["description", "owner_users"])
    assert sealed["description"][0].startswith(VALUE_PREFIX)
    assert sealed["description"][1] is None
    assert sealed["owner_users"].to_list()[1:] == [[], None]
    assert MARKER not in str(sealed.select("description", "owner_users").to_dicts())
    assert sealed["qualified_name"].equals(frame["qualified_name"])


def test_each_value_gets_its_own_nonce() -> None:
    sealed = cipher().seal_series(pl.Series("d", ["same"] * 1000))
    assert sealed.n_unique() == 1000


def test_files_round_trip_and_hide_their_content(tmp_path: Path) -> None:
    frame = pl.DataFrame({"raw": [f'{{"description": "{MARKER}"}}'] * 100})
    path = tmp_path / "batch.parquet"
    cipher().write_parquet(frame, path)
    data = path.read_bytes()
    assert data.startswith(FILE_MAGIC) and MARKER.encode() not in data
    assert cipher().read_parquet(path).equals(frame)
    assert cipher().read_parquet(path, columns=["raw"]).equals(frame)
    cipher().write_text(tmp_path / "note", MARKER)
    assert cipher().read_text(tmp_path / "note") == MARKER


def test_plaintext_written_before_encryption_still_reads(tmp_path: Path) -> None:
    frame = pl.DataFrame({"description": ["old", None], "owner_users": [["a"], []]})
    assert cipher().open_frame(frame, ["description", "owner_users"]).equals(frame)
    frame.write_parquet(tmp_path / "old.parquet")
    assert cipher().read_parquet(tmp_path / "old.parquet").equals(frame)


def test_encryption_off_writes_plaintext_yet_opens_what_was_sealed() -> None:
    sealed = cipher().seal_text(MARKER)
    off = cipher(sealing=False)
    assert off.seal_text(MARKER) == MARKER and not off.enabled
    assert off.open_text(sealed) == MARKER


def test_a_wrong_key_or_an_altered_value_is_an_error_not_garbage() -> None:
    sealed = cipher().seal_text(MARKER)
    assert sealed is not None
    with pytest.raises(CryptoError, match="acme"):
        cipher(os.urandom(32)).open_text(sealed)
    blob = cipher().seal_bytes(MARKER.encode())
    altered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(CryptoError):
        cipher().open_bytes(altered)
    with pytest.raises(CryptoError, match="LILY_ENCRYPTION"):
        TenantCipher("acme", None).open_text(sealed)
