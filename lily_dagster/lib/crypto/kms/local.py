"""`LILY_KMS=local`: the key-encryption key is `LILY_MASTER_KEY` (32 bytes, as 64 hex
digits or base64), else one generated once in `$LILY_HOME/keys/master.key` (0600)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lily_dagster.lib.crypto.kms import register_kms
from lily_dagster.settings import ConfigError

MASTER_KEY_FILE = "master.key"


def parse_master_key(raw: str, name: str = "LILY_MASTER_KEY") -> bytes:
    text = raw.strip()
    try:
        key = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        key = b""
    if len(key) != 32:
        raise ConfigError(
            f"{name}: expected 32 bytes as 64 hex digits or base64 "
            "(make one with `openssl rand -hex 32`)"
        )
    return key


def key_id_of(key: bytes) -> str:
    """A name for the key that reveals nothing of it (an HMAC of a constant)."""
    return "local:" + hmac.new(key, b"lily key id", hashlib.sha256).hexdigest()[:16]


@register_kms("local")
class LocalKek:
    def __init__(self, key: bytes, source: str) -> None:
        self._aead = AESGCM(key)
        self.key_id = key_id_of(key)
        self.source = source  # "LILY_MASTER_KEY" or the generated file

    @classmethod
    def from_argument(cls, argument: str, env: Mapping[str, str], home: Path) -> LocalKek:
        if argument:
            raise ConfigError("LILY_KMS=local takes no argument (the key is LILY_MASTER_KEY)")
        if env.get("LILY_MASTER_KEY"):
            return cls(parse_master_key(env["LILY_MASTER_KEY"]), "LILY_MASTER_KEY")
        return cls(_generated_key(Path(home) / "keys"), "$LILY_HOME/keys/master.key")

    def wrap(self, tenant: str, data_key: bytes) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, data_key, tenant.encode())
        return base64.b64encode(nonce + sealed).decode("ascii")

    def unwrap(self, tenant: str, wrapped: str) -> bytes:
        blob = base64.b64decode(wrapped)
        try:
            return self._aead.decrypt(blob[:12], blob[12:], tenant.encode())
        except InvalidTag:
            raise ConfigError(
                f"{self.source} does not unwrap tenant {tenant!r}'s data key"
            ) from None


def _generated_key(keys_dir: Path) -> bytes:
    """The generated master key, made once (a racing process reads the winner's)."""
    path = keys_dir / MASTER_KEY_FILE
    if not path.exists():
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = keys_dir / f".{MASTER_KEY_FILE}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, os.urandom(32).hex().encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if another process made it first
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return parse_master_key(path.read_text(), name=str(path))
