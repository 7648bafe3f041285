"""Each tenant's data key: made on first use, kept wrapped by the key-encryption key in
`$LILY_HOME/keys/tenants/<tenant>.json`, unwrapped once per process (re-read when the file
changes: a rotation or a deletion by another process is seen at the next use)."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lily_dagster.lib.crypto.cipher import TenantCipher
from lily_dagster.lib.crypto.kms import KeyEncryptionKey
from lily_dagster.lib.crypto.kms.local import NOT_GENERATED
from lily_dagster.lib.durable import fsync_dir
from lily_dagster.settings import ConfigError

FORMAT = 1


class KeyRing:
    """The data keys under `keys_dir` (`sealing` False: LILY_ENCRYPTION=off, nothing new is
    sealed but sealed data still opens). The key-encryption key is made on first need."""

    def __init__(self, keys_dir: Path, kek: KeyEncryptionKey, sealing: bool = True) -> None:
        self.keys_dir = keys_dir
        self.kek = kek
        self.sealing = sealing
        self._lock = threading.Lock()
        self._ciphers: dict[str, tuple[tuple[int, int], TenantCipher]] = {}
        self._checked = False  # check() passed once in this process

    def path(self, tenant: str) -> Path:
        return self.keys_dir / "tenants" / f"{tenant}.json"

    def tenants(self) -> list[str]:
        folder = self.keys_dir / "tenants"
        return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []

    def cipher(self, tenant: str) -> TenantCipher:
        """The tenant's cipher, its data key made now if it has none (and sealing is on)."""
        path = self.path(tenant)
        with self._lock:
            stamp = _stamp(path)
            cached = self._ciphers.get(tenant)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            if stamp is None and not self.sealing:
                cipher = TenantCipher(tenant, None)
            else:
                if stamp is None:
                    self._check_before_create()
                    self._create(tenant)
                    stamp = _stamp(path)
                cipher = TenantCipher(tenant, self._unwrap(tenant), sealing=self.sealing)
            if stamp is not None:
                self._ciphers[tenant] = (stamp, cipher)
            return cipher

    def check(self) -> None:
        """ConfigError (one line) when the configured key-encryption key is not the one
        that wrapped the existing data keys: checked before anything is read or written.
        Every key file's key id is compared; one data key is unwrapped (one KMS call, the
        first time only: KmsUnavailableError when the key service does not answer)."""
        tenants = self.tenants()
        for tenant in tenants:
            self._check_id(tenant, self._read(tenant))
        if tenants and not self._checked:
            self._unwrap(tenants[0])
            self._checked = True

    def status(self, tenant: str) -> dict[str, Any]:
        """Which key wrapped the tenant's data key, and when (no key material)."""
        stored = self._read(tenant)
        return {
            "tenant": tenant,
            "kek": stored.get("kek"),
            "wrapped_at": stored.get("wrapped_at"),
            "current": stored.get("kek") == self.kek.key_id,
        }

    def rotate(self, tenant: str, previous: KeyEncryptionKey | None = None) -> dict[str, Any]:
        """Re-wrap the tenant's data key with the configured key-encryption key (its data
        is untouched). `previous`: the key that wrapped it, when that is another one."""
        stored = self._read(tenant)
        unwrapping = previous if previous and stored["kek"] == previous.key_id else self.kek
        self._check_id(tenant, stored, unwrapping)
        data_key = unwrapping.unwrap(tenant, stored["wrapped"])
        self._store(tenant, data_key, replace=True)
        with self._lock:
            self._ciphers.pop(tenant, None)
        return {"tenant": tenant, "from": stored["kek"], "to": self.kek.key_id}

    def destroy(self, tenant: str) -> bool:
        """Crypto-shred: overwrite the wrapped data key, sync, then remove it."""
        path = self.path(tenant)
        with self._lock:
            self._ciphers.pop(tenant, None)
            if not path.exists():
                return False
            size = max(path.stat().st_size, 1)
            with path.open("r+b") as handle:
                handle.write(os.urandom(size))
                handle.flush()
                os.fsync(handle.fileno())
            path.unlink()
            fsync_dir(path.parent)
            return True

    def _check_before_create(self) -> None:
        """A new data key is wrapped only by the key that wrapped the others: with a wrong
        LILY_MASTER_KEY a new tenant would otherwise get a key no other process can open.
        The key ids are compared at every creation (rare); the unwrap once per process."""
        self.check()

    def _create(self, tenant: str) -> None:
        self._store(tenant, os.urandom(32), replace=False)

    def _store(self, tenant: str, data_key: bytes, replace: bool) -> None:
        path = self.path(tenant)
        for folder in (self.keys_dir, path.parent):  # mode applies to the last one only
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        wrapped = self.kek.wrap(tenant, data_key)  # first: it may make the generated key
        body = {
            "format": FORMAT,
            "tenant": tenant,
            "kek": self.kek.key_id,
            "wrapped": wrapped,
            "wrapped_at": datetime.now(UTC).isoformat(),
        }
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(body).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            if replace:
                os.replace(tmp, path)
            else:
                os.link(tmp, path)  # another process made it first: theirs stands
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(path.parent)

    def _read(self, tenant: str) -> dict[str, Any]:
        try:
            stored: dict[str, Any] = json.loads(self.path(tenant).read_text())
        except FileNotFoundError:
            raise ConfigError(f"tenant {tenant!r} has no data key") from None
        except (ValueError, UnicodeDecodeError):
            raise ConfigError(f"{self.path(tenant)}: not a Lily data key file") from None
        return stored

    def _unwrap(self, tenant: str) -> bytes:
        stored = self._read(tenant)
        self._check_id(tenant, stored)
        return self.kek.unwrap(tenant, stored["wrapped"])

    def _check_id(
        self, tenant: str, stored: dict[str, Any], kek: KeyEncryptionKey | None = None
    ) -> None:
        kek = kek or self.kek
        if stored.get("kek") == kek.key_id:
            return
        wrapped_by = str(stored.get("kek", "?"))
        raise ConfigError(self._mismatch(tenant, wrapped_by, kek))

    def _mismatch(self, tenant: str, wrapped_by: str, kek: KeyEncryptionKey) -> str:
        """The one line naming what is wrong: which key was expected, which is configured."""
        where = f"the data key of tenant {tenant!r} in {self.keys_dir} is wrapped by {wrapped_by}"
        source = getattr(kek, "source", None)
        if not (wrapped_by.startswith("local:") and kek.key_id.startswith("local:")):
            return f"{where}, but the configured key-encryption key is {kek.key_id} (LILY_KMS)"
        if source == "LILY_MASTER_KEY":
            return (
                f"LILY_MASTER_KEY is not the key that wrapped the data keys: {where}, "
                f"LILY_MASTER_KEY is {kek.key_id}"
            )
        if kek.key_id == NOT_GENERATED:
            return (
                f"LILY_MASTER_KEY is not set (and no key was generated): {where}; "
                "set LILY_MASTER_KEY to that key"
            )
        return (
            f"LILY_MASTER_KEY is not set, and the generated key "
            f"($LILY_HOME/keys/master.key, {kek.key_id}) is not the one: {where}"
        )


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_mtime_ns)


__all__ = ["KeyRing"]
