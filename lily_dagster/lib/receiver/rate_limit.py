"""The receiver's per-tenant request quota (429 with `Retry-After` when it is spent)."""

from __future__ import annotations

import math
import threading
import time

from lily_dagster.lib.receiver.errors import RequestRejectedError


class RateLimiter:
    """Token bucket per tenant: `rate` requests per second, bursts up to one second's worth."""

    def __init__(self, default_rate: float, rates: dict[str, float] | None = None) -> None:
        self.default_rate = default_rate
        self.rates = rates or {}
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, tenant: str) -> None:
        rate = self.rates.get(tenant, self.default_rate)
        capacity = max(rate, 1.0)
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(tenant, (capacity, now))
            tokens = min(capacity, tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[tenant] = (tokens, now)
                wait = math.ceil((1.0 - tokens) / rate)
                raise RequestRejectedError(
                    429,
                    "rate_limited",
                    f"over {rate:g} requests/s for tenant {tenant!r}",
                    headers={"Retry-After": str(max(1, wait))},
                )
            self._buckets[tenant] = (tokens - 1.0, now)
