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
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import polars as pl
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lily_dagster.settings import ConfigError

VALUE_PREFIX = "lily-enc1:"
FILE_MAGIC = b"LILYENC1"
_NONCE = 12
_AHEAD = "__sealed"  # suffix of a column sealed ahead


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
        if series.len() >= 1 << 32:
            raise ValueError("seal at most 2³² values per call")
        present = series.is_not_null()
        values = series.filter(present).cast(pl.Binary).to_list()  # UTF-8, no str round trip
        nonces = _nonces(len(values))
        encrypt = self._sealer.encrypt
        sealed = [n + encrypt(n, v, None) for n, v in zip(nonces, values, strict=True)]
        encoded = VALUE_PREFIX + pl.Series(sealed, dtype=pl.Binary).bin.encode("base64")
        return _scatter(series, present, encoded)

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

    def seal_frame(
        self,
        frame: pl.DataFrame,
        columns: Iterable[str],
        ahead: pl.DataFrame | None = None,
    ) -> pl.DataFrame:
        """`frame` with its content `columns` (those present) sealed. With `ahead` (from
        `seal_ahead`), a value whose record (qualified_name) and plaintext are the same
        there takes its sealed value from it instead of being sealed again."""
        if self._sealer is None:
            return frame
        if ahead is None:
            return frame.with_columns(self._seal_column(c) for c in _content(frame, columns))
        aligned = _aligned(frame.get_column("qualified_name"), ahead)
        return frame.with_columns(self._seal_reusing(c, aligned) for c in _content(frame, columns))

    def seal_ahead(self, frame: pl.DataFrame, columns: Iterable[str]) -> pl.DataFrame | None:
        """`frame`'s qualified_name and content `columns`, each beside its sealed values
        (`<column>__sealed`), or None when nothing is sealed: what `seal_frame(...,
        ahead=)` reuses where the record and its plaintext are the same. A bulk load seals
        batch i+1 this way while batch i is written (crypto.sealer)."""
        content = _content(frame, columns)
        if self._sealer is None or not content:
            return None
        return pl.DataFrame([frame.get_column("qualified_name"), *content]).with_columns(
            self._seal_column(c).alias(f"{c.name}{_AHEAD}") for c in content
        )

    def _seal_column(self, column: pl.Series) -> pl.Series:
        if column.dtype == pl.String:
            return self.seal_series(column)
        return self.seal_list_series(column)

    def _seal_reusing(self, column: pl.Series, aligned: pl.DataFrame) -> pl.Series:
        """`column` sealed, taking each value sealed ahead where its plaintext matches."""
        sealed_name = f"{column.name}{_AHEAD}"
        if sealed_name not in aligned.columns:
            return self._seal_column(column)
        before = aligned.get_column(sealed_name)
        reuse = column.eq_missing(aligned.get_column(column.name)) & before.is_not_null()
        rest = pl.select(pl.when(~reuse).then(column)).to_series().alias(column.name)
        fresh = self._seal_column(rest)
        chosen = pl.select(pl.when(reuse).then(before).otherwise(fresh)).to_series()
        return chosen.alias(column.name)

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


def _aligned(names: pl.Series, ahead: pl.DataFrame) -> pl.DataFrame:
    """`ahead`'s rows in the order of `names` (null where a name is not in it)."""
    if names.equals(ahead.get_column("qualified_name")):
        return ahead  # a bulk load's created records: the batch's own order
    unique = ahead.unique("qualified_name", keep="last")
    return names.to_frame().join(unique, on="qualified_name", how="left", maintain_order="left")


def _nonces(count: int) -> list[bytes]:
    """`count` nonces: 8 random bytes shared by one call, then each value's 4-byte position.
    Two calls collide with probability ~calls²/2⁶⁵ (NIST SP 800-38D's bound for random
    nonces), and one call's values never repeat one. Built in numpy: the per-value
    `struct.pack` and concatenation cost as much as the AES call."""
    table = np.empty((count, _NONCE), np.uint8)
    table[:, :8] = np.frombuffer(os.urandom(8), np.uint8)
    table[:, 8:] = np.arange(count, dtype=">u4").view(np.uint8).reshape(count, 4)
    nonces: list[bytes] = table.view(f"V{_NONCE}").ravel().tolist()  # 12-byte `bytes` each
    return nonces


def _scatter(series: pl.Series, present: pl.Series, values: pl.Series) -> pl.Series:
    """`values` (one per non-null of `series`, in order) put back in `series`' places."""
    if values.len() == series.len():
        return values.alias(series.name)
    placed = pl.Series(series.name, [None], dtype=values.dtype).extend_constant(
        None, series.len() - 1
    )
    return placed.scatter(present.arg_true(), values)


def _b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode("ascii")


__all__ = ["FILE_MAGIC", "VALUE_PREFIX", "CryptoError", "TenantCipher"]
