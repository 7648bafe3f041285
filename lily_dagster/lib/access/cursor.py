"""Opaque paging cursors: the position after which the next page starts, bound to the tenant
and signed, so that a cursor edited by hand or taken from another tenant is refused."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path


class BadCursorError(ValueError):
    pass


class CursorSigner:
    """Signs with the key kept at `path`, made on first use (so that cursors outlive a
    restart of the server and are shared by its workers; a receiver that never pages
    writes no key)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cached: bytes | None = None

    @property
    def _key(self) -> bytes:
        if self._cached is None:
            self._cached = _read_or_make_key(self.path)
        return self._cached

    def encode(self, tenant: str, after: str) -> str:
        body = base64.urlsafe_b64encode(json.dumps([tenant, after]).encode()).rstrip(b"=")
        return f"{body.decode()}.{self._mac(body)}"

    def decode(self, tenant: str, cursor: str) -> str:
        """The position a cursor made by `encode(tenant, ...)` holds."""
        body, _, mac = cursor.partition(".")
        if not hmac.compare_digest(mac, self._mac(body.encode())):
            raise BadCursorError("cursor is not one this server issued")
        try:
            padded = body + "=" * (-len(body) % 4)
            owner, after = json.loads(base64.urlsafe_b64decode(padded))
        except (binascii.Error, ValueError, TypeError):
            raise BadCursorError("cursor is malformed") from None
        if owner != tenant or not isinstance(after, str):
            raise BadCursorError("cursor belongs to another tenant")
        return after

    def _mac(self, body: bytes) -> str:
        return hmac.new(self._key, body, hashlib.sha256).hexdigest()[:32]


def _read_or_make_key(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = secrets.token_bytes(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another worker made it first
            return path.read_bytes()
        with os.fdopen(fd, "wb") as out:
            out.write(key)
        return key
