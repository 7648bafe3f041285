"""Erasure requests: one small file per request of a tenant, so that an erasure that was
interrupted (a crash, a kill) is visible and is completed by running it again.

`$LILY_HOME/gdpr/<tenant>/requests/<id>.json` holds the request's id, the subject's salted
hash (never the subject), when it started, its status (`running` until every store is done,
then `done`) and the counts per store of each run that worked on it. Running an erasure of
the same subject again resumes its unfinished request (same id); every store's eraser is
idempotent, so the stores an interrupted run had finished report 0 and the others finish.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lily_dagster.lib.durable import write_text_atomic

RUNNING, DONE = "running", "done"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class ErasureRequest:
    id: str
    tenant: str
    subject_hash: str
    started_at: str
    status: str = RUNNING
    finished_at: str | None = None
    # Per run that worked on it: when it started, and the count of each store it finished.
    runs: list[dict[str, Any]] = field(default_factory=list)


class ErasureRequests:
    """The requests of every tenant under `root` ($LILY_HOME/gdpr)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def folder(self, tenant: str) -> Path:
        return self.root / tenant / "requests"

    def all(self, tenant: str) -> list[ErasureRequest]:
        folder = self.folder(tenant)
        files = sorted(folder.glob("*.json")) if folder.is_dir() else []
        return [ErasureRequest(**json.loads(f.read_text())) for f in files]

    def unfinished(self, tenant: str) -> list[ErasureRequest]:
        return [r for r in self.all(tenant) if r.status != DONE]

    def begin(self, tenant: str, subject_hash: str) -> ErasureRequest:
        """The subject's unfinished request (resumed), else a new one, recorded as running."""
        for request in self.unfinished(tenant):
            if request.subject_hash == subject_hash:
                return request
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        request = ErasureRequest(f"{stamp}-{secrets.token_hex(4)}", tenant, subject_hash, _now())
        self._save(request)
        return request

    def start_run(self, request: ErasureRequest) -> None:
        """A run begins working on the request."""
        request.runs.append({"started_at": _now(), "stores": {}})
        self._save(request)

    def record(self, request: ErasureRequest, store: str, count: int) -> None:
        """A store is done in the current run (with how many items it rewrote)."""
        request.runs[-1]["stores"][store] = count
        self._save(request)

    def finish(self, request: ErasureRequest) -> None:
        request.status, request.finished_at = DONE, _now()
        self._save(request)

    def _save(self, request: ErasureRequest) -> None:
        path = self.folder(request.tenant) / f"{request.id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(asdict(request), sort_keys=True))


__all__ = ["DONE", "RUNNING", "ErasureRequest", "ErasureRequests"]
