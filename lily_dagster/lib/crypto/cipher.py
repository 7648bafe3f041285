"""A tenant's data key at work: AES-256-GCM over values (hub columns, inbox payloads) and
over whole files (staging, quarantine, dead letters, Dagster's intermediates).

A sealed value is `lily-enc1:` + base64(nonce ‖ ciphertext ‖ tag); a sealed file starts
with `LILYENC1` + nonce. Opening passes through anything without the marker, so data
written before encryption was on (or with `LILY_ENCRYPTION=off`) stays readable. A list
column (owners) is sealed as one value, a one-element list holding its JSON: one AES call
per record instead of one per owner.
"""

from __future__ import annotations

import base64
import io
import os
import struct
from collections.abc import Iterable
from pathlib import Path

import polars as pl
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lily_dagster.settings import ConfigError

VALUE_PREFIX = "lily-enc1:"
FILE_MAGIC = b"LILYENC1"
_NONCE = 12


class CryptoError(ConfigError):
    """A key or a sealed value that cannot be used; the message is one line (a CLI prints
    it as its error, like a configuration error: the fix is the right key)."""


class TenantCipher:
    """Seals and opens one tenant's content with its data key. Without a key, or with
    `sealing` off (LILY_ENCRYPTION=off), sealing is the identity; opening still opens
    whatever was sealed with the key."""

    def __init__(self, tenant: str, key: bytes | None, sealing: bool = True) -> None:
        self.tenant = tenant
        self._aead = AESGCM(key) if key is not None else None  # opens
        self._sealer = self._aead if sealing else None  # seals (None: stored as given)
        self.enabled = self._sealer is not None

    # -- bytes and files ---------------------------------------------------------------
    def seal_bytes(self, data: bytes) -> bytes:
        if self._sealer is None:
            return data
        nonce = os.urandom(_NONCE)
        return FILE_MAGIC + nonce + self._sealer.encrypt(nonce, data, None)

    def open_bytes(self, blob: bytes) -> bytes:
        if not blob.startswith(FILE_MAGIC):
            return blob  # written before encryption was on
        head = len(FILE_MAGIC)
        return self._open(blob[head : head + _NONCE], blob[head + _NONCE :])

    def write_parquet(self, frame: pl.DataFrame, path: Path) -> None:
        """`frame` as a Parquet file at `path`, sealed (callers make the write atomic)."""
        if self._sealer is None:
            frame.write_parquet(path)
            return
        buffer = io.BytesIO()
        frame.write_parquet(buffer)
        path.write_bytes(self.seal_bytes(buffer.getvalue()))

    def read_parquet(self, path: Path, columns: list[str] | None = None) -> pl.DataFrame:
        data = self.open_bytes(Path(path).read_bytes())
        return pl.read_parquet(io.BytesIO(data), columns=columns)

    def write_text(self, path: Path, text: str) -> None:
        path.write_bytes(self.seal_bytes(text.encode("utf-8")))

    def read_text(self, path: Path) -> str:
        return self.open_bytes(Path(path).read_bytes()).decode("utf-8")

    # -- one value ---------------------------------------------------------------------
    def seal_text(self, value: str | None) -> str | None:
        if value is None or self._sealer is None:
            return value
        nonce = os.urandom(_NONCE)
        blob = nonce + self._sealer.encrypt(nonce, value.encode("utf-8"), None)
        return VALUE_PREFIX + _b64(blob)

    def open_text(self, value: str | None) -> str | None:
        if value is None or not value.startswith(VALUE_PREFIX):
            return value
        blob = base64.b64decode(value[len(VALUE_PREFIX) :])
        return self._open(blob[:_NONCE], blob[_NONCE:]).decode("utf-8")

    # -- columns -----------------------------------------------------------------------
    def seal_series(self, series: pl.Series) -> pl.Series:
        """A String column sealed value by value (nulls stay null)."""
        if self._sealer is None or series.null_count() == series.len():
            return series
        encrypt = self._sealer.encrypt
        # Nonces: 8 random bytes per call, then the value's 4-byte position. Two calls
        # collide with probability ~calls²/2⁶⁵ (NIST SP 800-38D's bound for random nonces),
        # and one call's values never repeat one.
        if series.len() >= 1 << 32:
            raise ValueError("seal at most 2³² values per call")
        base = os.urandom(8)
        sealed = [
            None if v is None else (n := base + struct.pack(">I", i)) + encrypt(n, v.encode(), None)
            for i, v in enumerate(series.to_list())
        ]
        encoded = pl.Series(series.name, sealed, dtype=pl.Binary).bin.encode("base64")
        return (VALUE_PREFIX + encoded).alias(series.name)

    def open_series(self, series: pl.Series) -> pl.Series:
        """A String column with its sealed values opened."""
        if series.dtype != pl.String or series.len() == 0:
            return series
        marked = series.str.starts_with(VALUE_PREFIX)
        if not marked.any():
            return series
        # Only the sealed values are decoded: a column may mix them with plaintext ones
        # (rows written before encryption was on).
        sealed = pl.select(pl.when(marked).then(series.str.strip_prefix(VALUE_PREFIX)))
        raw = sealed.to_series().str.decode("base64")
        open_ = self._open
        opened = [
            (open_(b[:_NONCE], b[_NONCE:]).decode() if m else v) if v is not None else None
            for v, b, m in zip(series.to_list(), raw.to_list(), marked.to_list(), strict=True)
        ]
        return pl.Series(series.name, opened, dtype=pl.String)

    def seal_list_series(self, series: pl.Series) -> pl.Series:
        """A List(String) column: each non-empty list becomes [its sealed JSON] (a null
        stays null, an empty list empty)."""
        if self._sealer is None or series.null_count() == series.len():
            return series
        name = series.name
        as_json = pl.select(
            pl.when(series.list.len() > 0).then(pl.struct(series).struct.json_encode())
        ).to_series()
        sealed = self.seal_series(as_json.alias(name))
        return (
            pl.select(pl.when(sealed.is_not_null()).then(pl.concat_list(sealed)).otherwise(series))
            .to_series()
            .alias(name)
        )

    def open_list_series(self, series: pl.Series) -> pl.Series:
        if series.len() == 0 or series.dtype != pl.List(pl.String):
            return series
        name = series.name
        first = series.list.first()
        marked = (series.list.len() == 1) & first.str.starts_with(VALUE_PREFIX)
        if not marked.any():
            return series
        opened = self.open_series(pl.select(pl.when(marked).then(first)).to_series())
        decoded = opened.str.json_decode(pl.Struct({name: pl.List(pl.String)})).struct.field(name)
        return pl.select(pl.when(marked).then(decoded).otherwise(series)).to_series().alias(name)

    def seal_frame(self, frame: pl.DataFrame, columns: Iterable[str]) -> pl.DataFrame:
        """`frame` with its content `columns` (those present) sealed."""
        if self._sealer is None:
            return frame
        return frame.with_columns(
            self.seal_series(c) if c.dtype == pl.String else self.seal_list_series(c)
            for c in _content(frame, columns)
        )

    def open_frame(self, frame: pl.DataFrame, columns: Iterable[str]) -> pl.DataFrame:
        """`frame` with its content `columns` (those present) opened."""
        return frame.with_columns(
            self.open_series(c) if c.dtype == pl.String else self.open_list_series(c)
            for c in _content(frame, columns)
        )

    def _open(self, nonce: bytes, sealed: bytes) -> bytes:
        if self._aead is None:
            raise CryptoError(
                f"tenant {self.tenant!r}: data is encrypted but LILY_ENCRYPTION is off"
            )
        try:
            return self._aead.decrypt(nonce, sealed, None)
        except InvalidTag:
            raise CryptoError(
                f"tenant {self.tenant!r}: sealed data does not open with the tenant's data key "
                "(the key was destroyed by `lily tenant delete` or replaced, or the data was "
                "altered)"
            ) from None


def _content(frame: pl.DataFrame, columns: Iterable[str]) -> list[pl.Series]:
    """The String and List(String) columns of `frame` among `columns`."""
    present = [frame.get_column(c) for c in columns if c in frame.columns]
    return [c for c in present if c.dtype in (pl.String, pl.List(pl.String))]


def _b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode("ascii")


__all__ = ["FILE_MAGIC", "VALUE_PREFIX", "CryptoError", "TenantCipher"]
