"""A tenant's erased-subjects list: which data subjects were erased, so that events naming
them that arrive later are masked on ingest (the `erased-subjects` pre-ingest hook).

`$LILY_HOME/gdpr/<tenant>.json`, sealed with the tenant's data key as a whole, holds a
random salt and, per erased subject, the SHA-256 of salt ‖ the subject case-folded, and
the subject's length. Never the subject: a hash is found again only by hashing a candidate,
so the hook hashes the tokens of an event (`mask.py`). The lengths let it hash only the
candidates that could match. Sealing the salt keeps a dictionary of e-mail addresses from
being tried against the hashes without the tenant's key (and a shredded tenant's list
means nothing).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lily_dagster.lib.crypto import Ciphers, plaintext
from lily_dagster.lib.durable import write_atomic
from lily_dagster.lib.gdpr.subject import Subject

GDPR_DIR = "gdpr"  # under $LILY_HOME
_SALT_BYTES = 32


@dataclass(frozen=True)
class ErasedList:
    """One tenant's list as read: its salt, the hashes and lengths of its subjects."""

    salt: bytes
    hashes: frozenset[str]
    lengths: frozenset[int]

    def digest(self, folded: str) -> str:
        return hashlib.sha256(self.salt + folded.encode("utf-8")).hexdigest()

    def holds(self, folded: str) -> bool:
        return len(folded) in self.lengths and self.digest(folded) in self.hashes

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": 1,
                "salt": self.salt.hex(),
                "subjects": sorted(self.hashes),
                "lengths": sorted(self.lengths),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ErasedList:
        data = json.loads(text)
        return cls(
            bytes.fromhex(data["salt"]), frozenset(data["subjects"]), frozenset(data["lengths"])
        )


# path → ((st_ino, st_mtime_ns, st_size), list): the hook reads a list once per change.
_cache: dict[Path, tuple[tuple[int, int, int], ErasedList]] = {}
_cache_guard = threading.Lock()


class ErasedSubjects:
    """The erased-subjects lists under `root` ($LILY_HOME/gdpr)."""

    def __init__(self, root: Path, ciphers: Ciphers = plaintext) -> None:
        self.root = Path(root)
        self.ciphers = ciphers

    def path(self, tenant: str) -> Path:
        return self.root / f"{tenant}.json"

    def load(self, tenant: str) -> ErasedList | None:
        """The tenant's list (None: it never had one). One stat when it is unchanged."""
        path = self.path(tenant)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        with _cache_guard:
            cached = _cache.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        erased = ErasedList.from_json(self.ciphers(tenant).read_text(path))
        with _cache_guard:
            _cache[path] = (stamp, erased)
        return erased

    def digest(self, tenant: str, subject: Subject) -> str:
        """The subject's salted hash in the tenant's list (the salt made on first use)."""
        with self._locked(tenant):
            return self._salted(tenant).digest(subject.folded)

    def add(self, tenant: str, subject: Subject) -> str:
        """Record the subject as erased (idempotent); its salted hash."""
        with self._locked(tenant):
            current = self._salted(tenant)
            digest = current.digest(subject.folded)
            if digest not in current.hashes:
                self._write(
                    tenant,
                    ErasedList(
                        current.salt,
                        current.hashes | {digest},
                        current.lengths | {len(subject.folded)},
                    ),
                )
            return digest

    def _salted(self, tenant: str) -> ErasedList:
        """The list, made (empty, with a new salt) when there is none; under the lock."""
        current = self.load(tenant)
        if current is None:
            current = ErasedList(os.urandom(_SALT_BYTES), frozenset(), frozenset())
            self._write(tenant, current)
        return current

    def _write(self, tenant: str, erased: ErasedList) -> None:
        cipher = self.ciphers(tenant)
        write_atomic(self.path(tenant), lambda tmp: cipher.write_text(tmp, erased.to_json()))

    @contextmanager
    def _locked(self, tenant: str) -> Iterator[None]:
        """One writer of a tenant's list at a time (the CLI and a Dagster run may both
        erase): read, change and write it under an exclusive lock."""
        folder = self.root / tenant  # the tenant's own folder: deleted with the tenant
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / "erased.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


__all__ = ["GDPR_DIR", "ErasedList", "ErasedSubjects"]
