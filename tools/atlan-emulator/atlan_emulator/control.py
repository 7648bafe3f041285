"""What tests switch at run time: injected faults, the rate limit, the API key's state, and the
counters `/_emulator/stats` reports. Thread-safe: requests are answered on several threads."""

from __future__ import annotations

import hmac
import math
import re
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from atlan_emulator.errors import AtlasError, revoked_token, unauthenticated

RATE_WINDOW_S = 60.0
# Parameterised routes are counted by template, so stats stay readable.
_TEMPLATES = (
    (re.compile(r"^/api/meta/entity/guid/[^/]+$"), "/api/meta/entity/guid/{guid}"),
    (
        re.compile(r"^/api/meta/entity/uniqueAttribute/type/[^/]+$"),
        "/api/meta/entity/uniqueAttribute/type/{typeName}",
    ),
    (re.compile(r"^/api/meta/types/typedef/name/[^/]+$"), "/api/meta/types/typedef/name/{name}"),
)


def path_template(path: str) -> str:
    for pattern, template in _TEMPLATES:
        if pattern.match(path):
            return template
    return path


@dataclass(slots=True)
class Fault:
    status: int | None  # None: only delay the request
    remaining: int
    retry_after: float | None
    delay_s: float
    path_prefix: str | None

    def retry_after_header(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        # Whole seconds are the standard form. A fraction goes out as a decimal so tests can
        # stay fast: httpx_retries ignores it (falls back to its backoff), Lily's limiter honours
        # it.
        seconds = self.retry_after
        return {"Retry-After": str(int(seconds)) if seconds.is_integer() else f"{seconds:g}"}

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "count": self.remaining,
            "retry_after": self.retry_after,
            "delay_s": self.delay_s,
            "path_prefix": self.path_prefix,
        }


@dataclass(slots=True)
class _State:
    """Everything a reset puts back: no faults, no rate limit, a valid key, zero counters."""

    faults: list[Fault] = field(default_factory=list)
    rate_limit: int | None = None
    admitted: deque[float] = field(default_factory=deque)  # monotonic times in the window
    revoked: bool = False
    requests: int = 0
    by_path: Counter[str] = field(default_factory=Counter)
    status_counts: Counter[str] = field(default_factory=Counter)
    bulk_entities: int = 0


class Controls:
    def __init__(self, api_key: str, rate_limit_per_min: int | None = None) -> None:
        self._lock = threading.Lock()
        self._api_key = api_key.encode()
        self._s = _State(rate_limit=rate_limit_per_min)

    def reset(self) -> None:
        with self._lock:
            self._s = _State()

    # -- faults -------------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> list[dict[str, Any]]:
        with self._lock:
            self._s.faults.append(fault)
            return [f.to_json() for f in self._s.faults]

    def clear_faults(self) -> None:
        with self._lock:
            self._s.faults.clear()

    def take_fault(self, path: str) -> Fault | None:
        """The first pending fault for this path, one use of it spent."""
        with self._lock:
            for fault in self._s.faults:
                if fault.path_prefix is None or path.startswith(fault.path_prefix):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._s.faults.remove(fault)
                    return fault
        return None

    # -- rate limit ---------------------------------------------------------------------------

    def set_rate_limit(self, per_min: int | None) -> None:
        with self._lock:
            self._s.rate_limit = per_min
            self._s.admitted.clear()

    def admit(self) -> tuple[int, int] | None:
        """None when the request may go on, else (limit, seconds until a slot frees)."""
        now = time.monotonic()
        with self._lock:
            if self._s.rate_limit is None:
                return None
            while self._s.admitted and self._s.admitted[0] <= now - RATE_WINDOW_S:
                self._s.admitted.popleft()
            if len(self._s.admitted) >= self._s.rate_limit:
                wait = self._s.admitted[0] + RATE_WINDOW_S - now
                return self._s.rate_limit, max(1, math.ceil(wait))
            self._s.admitted.append(now)
            return None

    # -- API key ------------------------------------------------------------------------------

    def revoke(self) -> None:
        with self._lock:
            self._s.revoked = True

    def check_key(self, authorization: bytes | None) -> AtlasError | None:
        """None when `Authorization: Bearer <key>` carries the valid key, else the refusal."""
        scheme, _, token = (authorization or b"").partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self._api_key):
            return unauthenticated()
        with self._lock:
            return revoked_token() if self._s.revoked else None

    # -- counters -----------------------------------------------------------------------------

    def count_request(self, path: str) -> None:
        with self._lock:
            self._s.requests += 1
            self._s.by_path[path_template(path)] += 1

    def count_status(self, status: int) -> None:
        with self._lock:
            self._s.status_counts[str(status)] += 1

    def count_bulk_entities(self, n: int) -> None:
        with self._lock:
            self._s.bulk_entities += n

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self._s.requests,
                "by_path": dict(self._s.by_path),
                "status_counts": dict(self._s.status_counts),
                "bulk_entities_received": self._s.bulk_entities,
                "rate_limit_per_min": self._s.rate_limit,
                "pending_faults": [f.to_json() for f in self._s.faults],
                "key_revoked": self._s.revoked,
            }
