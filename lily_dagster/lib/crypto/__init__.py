"""Tenant data protection at rest (CONTRACT.md §7): envelope encryption with a data key per
tenant (AES-256-GCM), wrapped by a key-encryption key from the key service `LILY_KMS`
names. `cipher_for(settings, tenant)` is what a store asks for; docs/encryption.md says
what is sealed where."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable

from pydantic import SecretStr

from lily_dagster.lib.crypto.cipher import FILE_MAGIC, VALUE_PREFIX, CryptoError, TenantCipher
from lily_dagster.lib.crypto.keyring import KeyRing
from lily_dagster.lib.crypto.kms import KeyEncryptionKey, KmsUnavailableError, key_encryption_key
from lily_dagster.settings import Settings

Ciphers = Callable[[str], "TenantCipher"]  # tenant → its cipher (what a store is given)


def plaintext(tenant: str) -> TenantCipher:
    """A cipher that seals nothing (stores built without settings, in unit tests)."""
    return TenantCipher(tenant, None)


_RINGS: dict[tuple[str, ...], KeyRing] = {}
_GUARD = threading.Lock()


def keyring(settings: Settings) -> KeyRing:
    """The key ring of `settings` (one per home and key configuration per process)."""
    master = settings.master_key.get_secret_value() if settings.master_key else ""
    key = (
        str(settings.keys_dir),
        settings.kms,
        hashlib.sha256(master.encode()).hexdigest(),
        str(settings.encryption),
        settings.aws_region or "",
    )
    with _GUARD:
        ring = _RINGS.get(key)
        if ring is None:
            kek = kek_of(settings, settings.kms, settings.master_key)
            ring = _RINGS[key] = KeyRing(settings.keys_dir, kek, sealing=settings.encryption)
        return ring


def kek_of(settings: Settings, kms: str, master_key: SecretStr | None) -> KeyEncryptionKey:
    """The key-encryption key the key service spec `kms` names (with `master_key` for
    `local`), in the region of `settings` (ConfigError naming the problem)."""
    env = {"LILY_MASTER_KEY": master_key.get_secret_value()} if master_key else {}
    if settings.aws_region:
        env["AWS_REGION"] = settings.aws_region
    return key_encryption_key(kms, env, settings.home)


def cipher_for(settings: Settings, tenant: str) -> TenantCipher:
    """The tenant's cipher (its data key made on first use)."""
    return keyring(settings).cipher(tenant)


def ciphers_of(settings: Settings) -> Ciphers:
    """What a store built from `settings` is given: tenant → cipher."""
    return keyring(settings).cipher


__all__ = [
    "FILE_MAGIC",
    "VALUE_PREFIX",
    "Ciphers",
    "CryptoError",
    "KeyRing",
    "KmsUnavailableError",
    "TenantCipher",
    "cipher_for",
    "ciphers_of",
    "kek_of",
    "keyring",
    "plaintext",
]
