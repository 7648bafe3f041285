"""Key-encryption keys (`LILY_KMS`): each backend is one module here that registers itself
(`local`, `aws-kms`); a third-party one registers under the `lily_dagster.kms` entry point.

A backend wraps and unwraps a tenant's 32-byte data key. `LILY_KMS=<name>[:<argument>]`
picks one; the argument (an AWS key id or ARN) goes to its `from_argument`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from lily_dagster.lib.plugins import registry
from lily_dagster.settings import ConfigError

_REGISTRY = registry("kms", "lily_dagster.lib.crypto.kms", "lily_dagster.kms", instantiate=False)
register_kms = _REGISTRY.register


class KeyEncryptionKey(Protocol):
    """One key-encryption key. `key_id` names it in each wrapped data key's file, so that
    a different or missing key is reported as such before anything is decrypted."""

    key_id: str

    def wrap(self, tenant: str, data_key: bytes) -> str: ...

    def unwrap(self, tenant: str, wrapped: str) -> bytes: ...


class KmsUnavailableError(RuntimeError):
    """The key service could not be reached or refused the request (retry later)."""


def key_encryption_key(spec: str, env: Mapping[str, str], home: Any) -> KeyEncryptionKey:
    """The key-encryption key `LILY_KMS` names (ConfigError naming the problem)."""
    name, _, argument = spec.partition(":")
    backend = _REGISTRY.find(name)
    if backend is None:
        raise ConfigError(f"LILY_KMS={spec!r}: unknown key service; known: {_REGISTRY.names()}")
    kek: KeyEncryptionKey = backend.from_argument(argument, env, home)
    return kek


__all__ = ["KeyEncryptionKey", "KmsUnavailableError", "key_encryption_key", "register_kms"]
