"""`LILY_KMS=local`: the key-encryption key is `LILY_MASTER_KEY` (32 bytes, as 64 hex
digits or base64), else one generated in `$LILY_HOME/keys/master.key` (0600) the first
time a data key is wrapped: never merely to check or unwrap, so a command run without
LILY_MASTER_KEY against data wrapped with one reports that and writes nothing."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lily_dagster.lib.crypto.kms import register_kms
from lily_dagster.lib.durable import fsync_dir
from lily_dagster.settings import ConfigError

MASTER_KEY_FILE = "master.key"
GENERATED = "$LILY_HOME/keys/master.key"
# The key id of a generated key that does not exist yet (it matches no wrapped data key).
NOT_GENERATED = "local:not-generated"


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
    """`source` says where the key comes from: "LILY_MASTER_KEY", or GENERATED (then
    `keys_dir` holds it, or will once a data key is first wrapped)."""

    def __init__(self, key: bytes | None, source: str, keys_dir: Path | None = None) -> None:
        self.source = source
        self._keys_dir = keys_dir
        self._aead: AESGCM | None = None
        self._id = NOT_GENERATED
        self._lock = threading.Lock()
        if key is not None:
            self._use(key)

    @classmethod
    def from_argument(cls, argument: str, env: Mapping[str, str], home: Path) -> LocalKek:
        if argument:
            raise ConfigError("LILY_KMS=local takes no argument (the key is LILY_MASTER_KEY)")
        if env.get("LILY_MASTER_KEY"):
            return cls(parse_master_key(env["LILY_MASTER_KEY"]), "LILY_MASTER_KEY")
        keys_dir = Path(home) / "keys"
        return cls(_read_generated(keys_dir), GENERATED, keys_dir)

    @property
    def key_id(self) -> str:
        if self._aead is None and self._keys_dir is not None:
            self._load(generate=False)
        return self._id

    @property
    def generated_path(self) -> Path | None:
        return self._keys_dir / MASTER_KEY_FILE if self._keys_dir is not None else None

    def wrap(self, tenant: str, data_key: bytes) -> str:
        aead = self._aead or self._load(generate=True)
        assert aead is not None  # generated if it was missing
        nonce = os.urandom(12)
        sealed = aead.encrypt(nonce, data_key, tenant.encode())
        return base64.b64encode(nonce + sealed).decode("ascii")

    def unwrap(self, tenant: str, wrapped: str) -> bytes:
        aead = self._aead or self._load(generate=False)
        if aead is None:
            raise ConfigError(
                f"LILY_MASTER_KEY is not set and there is no {GENERATED}: nothing can "
                f"unwrap tenant {tenant!r}'s data key"
            )
        try:
            blob = base64.b64decode(wrapped, validate=True)
            return aead.decrypt(blob[:12], blob[12:], tenant.encode())
        except (InvalidTag, ValueError, binascii.Error):
            raise ConfigError(
                f"{self.source} does not unwrap tenant {tenant!r}'s data key"
            ) from None

    def _use(self, key: bytes) -> AESGCM:
        self._aead = AESGCM(key)
        self._id = key_id_of(key)
        return self._aead

    def _load(self, generate: bool) -> AESGCM | None:
        """The generated key, read (or made, `generate`) once it is needed."""
        assert self._keys_dir is not None
        with self._lock:
            if self._aead is not None:
                return self._aead
            key = _make_generated(self._keys_dir) if generate else _read_generated(self._keys_dir)
            return self._use(key) if key is not None else None


def _read_generated(keys_dir: Path) -> bytes | None:
    path = keys_dir / MASTER_KEY_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return parse_master_key(text, name=str(path))


def _make_generated(keys_dir: Path) -> bytes:
    """The generated master key, made now if missing (a racing process reads the winner's)."""
    path = keys_dir / MASTER_KEY_FILE
    if not path.exists():
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = keys_dir / f".{MASTER_KEY_FILE}.{os.getpid()}.{threading.get_ident()}.tmp"
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
        fsync_dir(keys_dir)
    key = _read_generated(keys_dir)
    assert key is not None
    return key
